package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/attache-proxy/attache/internal/testenv"
)

// TestPostgresListener: the seed's database ambassador from a config file,
// with pgx as the application: transaction pooling, the pool in /status
// and in /metrics. Not parallel: initdb and the 2-core machine would make
// the short health-check intervals of the parallel tests time out.
func TestPostgresListener(t *testing.T) {
	pg := testenv.Postgres(t)
	users := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", pg.User, pg.Password)), 0o600)
	h := start(t, yamlf(`
listeners:
  - name: db
    address: "127.0.0.1:0"
    protocol: postgres
    cluster: pg
    postgres: {pool_mode: transaction, pool_size: 2, auth: {users_file: "%s", user: postgres}}
clusters:
  - {name: pg, endpoints: ["%s"], health_check: {type: postgres, user: postgres, password: "${PGPW}", interval: 2s}}
`, users, pg.Addr), map[string]string{"PGPW": pg.Password})
	h.waitReady()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conns []*pgx.Conn
	for range 5 {
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, h.addr("db")))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		conns = append(conns, c)
	}
	for i := range 20 {
		var n int
		if err := conns[i%5].QueryRow(ctx, "SELECT $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d: got %d %v", i, n, err)
		}
	}
	if _, err := conns[0].Exec(ctx, "SET work_mem = '8MB'"); err != nil {
		t.Fatal(err)
	}
	_, body := h.admin("GET", "/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	var pools string
	for _, l := range st.Listeners {
		if l.Name == "db" {
			if len(l.Pools) != 1 || l.Pools[0].ServersOpen > 2 || l.Pools[0].Transactions < 20 {
				t.Errorf("/status pools: %+v", l.Pools)
			}
			pools = fmt.Sprint(l.Pools)
		}
	}
	if pools == "" {
		t.Fatalf("/status has no pools for listener db: %s", body)
	}
	if v := h.metric(`attache_postgres_transactions_total{database="postgres",listener="db",user="postgres"}`); v == "" || v == "0" {
		t.Errorf("transactions metric: %q", v)
	}
	if v := h.metric(`attache_postgres_pins_total{database="postgres",kind="SET",listener="db",user="postgres"}`); v != "1" {
		t.Errorf("pins metric: %q, want 1", v)
	}
	if v := h.metric(`attache_postgres_wait_seconds_count{database="postgres",listener="db",user="postgres"}`); v == "" || strings.HasPrefix(v, "0") {
		t.Errorf("wait histogram count: %q", v)
	}

	// A role that is not in the users file logs in through the auth
	// query (run as postgres), its SCRAM secret passed through.
	pg.SQL(t, "CREATE ROLE viaquery LOGIN PASSWORD 'vq-pw'")
	vq, err := pgx.Connect(ctx, fmt.Sprintf("postgres://viaquery:vq-pw@%s/postgres?sslmode=disable", h.addr("db")))
	if err != nil {
		t.Fatalf("login through auth.query: %v", err)
	}
	var who string
	if err := vq.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "viaquery" {
		t.Errorf("current_user through auth.query: %q %v", who, err)
	}
	vq.Close(ctx)

	// A reload reads the users file again and keeps the pools.
	logins := h.metric(`attache_postgres_server_logins_total{database="postgres",listener="db",user="postgres"}`)
	os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", pg.User, "changed")), 0o600)
	if code, body := h.admin("POST", "/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	_, err = pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, h.addr("db")))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Errorf("old password after the users file changed: got %v, want 28P01", err)
	}
	// conns[0] is pinned (SET) and keeps its server connection; a new
	// server login would now fail, since attache logs in with the file's
	// password.
	var n int
	if err := conns[0].QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Errorf("a connected client after the reload: %v", err)
	}
	if got := h.metric(`attache_postgres_server_logins_total{database="postgres",listener="db",user="postgres"}`); got != logins {
		t.Errorf("server logins went from %s to %s across the reload; want the pool kept", logins, got)
	}
}
