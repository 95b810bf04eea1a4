package pgproxy

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/attache-proxy/attache/internal/testenv"
)

// BenchmarkSelect runs SELECT 1 from 16 clients over a pool of 4 in
// transaction mode (go test -bench Select -cpuprofile cpu.out).
func BenchmarkSelect(b *testing.B) {
	pg := testenv.Postgres(b)
	f := &fixture{pg: pg, users: map[string]string{pg.User: pg.Password}}
	// attache-primary routes each transaction by role (target: primary).
	primary := roleCluster(b, pg.Addr)
	observe(primary, pg.Addr, &asPrimary)
	for _, target := range []string{"direct", "attache", "attache-primary"} {
		for _, mode := range []string{"simple_protocol", "cache_statement"} {
			b.Run(target+"/"+mode, func(b *testing.B) {
				addr := pg.Addr
				switch target {
				case "attache":
					addr, _ = f.proxy(b, Config{Mode: TransactionMode, PoolSize: 4})
				case "attache-primary":
					addr, _ = f.proxy(b, Config{Mode: TransactionMode, PoolSize: 4, Target: TargetPrimary, Cluster: primary})
				}
				const clients = 16
				conns := make([]*pgx.Conn, clients)
				for i := range conns {
					c, err := pgx.Connect(context.Background(), fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&default_query_exec_mode=%s", pg.User, pg.Password, addr, mode))
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close(context.Background())
					conns[i] = c
				}
				b.ResetTimer()
				var wg sync.WaitGroup
				for i := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var n int
						for j := i; j < b.N; j += clients {
							if err := conns[i].QueryRow(context.Background(), "SELECT 1").Scan(&n); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			})
		}
	}
}
