package pgproxy

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// shuttingDown is a server that answers every startup as PostgreSQL does
// while it shuts down: FATAL 57P03, then a close.
func shuttingDown(t *testing.T) string {
	return testenv.Serve(t, nil, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := readStartup(c); err != nil {
			return
		}
		send(c, errorResponse("FATAL", "57P03", "the database system is shutting down"))
	})
}

// TestConnectElsewhere: when a new server connection fails on one
// endpoint in a way that may not last (refused, a server shutting down),
// another endpoint that fits the target takes it at once and no client
// sees the failure. Before, under target any, a server shutting down
// failed the clients whose connection went to it (57P03).
func TestConnectElsewhere(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		target Target
		bad    func(*testing.T) string
	}{
		{"any, shutting down", TargetAny, shuttingDown},
		{"any, refused", TargetAny, deadPort},
		{"standby, shutting down", TargetStandby, shuttingDown},
		{"standby, refused", TargetStandby, deadPort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.bad(t)
			pick, err := balance.New("round_robin")
			if err != nil {
				t.Fatal(err)
			}
			c := upstream.New(upstream.Options{Name: "orders", Picker: pick, HasHealthCheck: true, ConnectTimeout: 5 * time.Second})
			c.SetEndpoints([]upstream.Target{{Addr: bad}, {Addr: f.pg.Addr}})
			for _, a := range []string{bad, f.pg.Addr} {
				observe(c, a, ptr(asStandby(0)))
			}
			cfg := Config{Mode: TransactionMode, Target: tc.target, Cluster: c, Users: f.users, PoolSize: 8,
				QueryWaitTimeout: 20 * time.Second, MaxPrepared: 100, ResetQuery: "DISCARD ALL",
				Dial: func(ctx context.Context, ep *upstream.Endpoint) (net.Conn, string, error) {
					if ep != nil {
						conn, err := c.DialEndpoint(ctx, ep)
						return conn, ep.Addr, err
					}
					conn, ep, err := c.Dial(ctx, 0)
					if err != nil {
						return nil, "", err
					}
					return conn, ep.Addr, nil
				}}
			p := New(onPath(t, cfg, true))
			t.Cleanup(p.Close)
			addr := testenv.Serve(t, nil, func(conn net.Conn) { p.ServeConn(context.Background(), conn) })
			// Clients inside transactions at once: each holds a server
			// connection of its own, opened in turn on both endpoints.
			var txs []pgx.Tx
			for i := range 6 {
				conn := connect(t, addr, "app", "app-pw", "")
				tx, err := conn.Begin(ctx)
				if err == nil {
					_, err = tx.Exec(ctx, "SELECT 1")
				}
				if err != nil {
					t.Fatalf("client %d: got %v, want success", i, err)
				}
				txs = append(txs, tx)
			}
			for _, tx := range txs {
				tx.Rollback(ctx)
			}
		})
	}
}

// TestServerRestartBetweenQueries: a server restarted between two
// statements of pooled clients (its idle connections closed by the
// server) costs them nothing: the dead connections are found and replaced
// before a statement is sent on them, on both paths.
func TestServerRestartBetweenQueries(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	top := t // Restart's t: the test that started the server
	for _, noEngine := range []bool{false, true} {
		name := "engine"
		if noEngine {
			name = "goroutines"
		}
		t.Run(name, func(t *testing.T) {
			addr, _ := f.proxyOn(t, Config{Mode: TransactionMode, PoolSize: 4}, !noEngine)
			var conns []*pgx.Conn
			for range 3 {
				conn := connect(t, addr, "app", "app-pw", "")
				if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, conn)
			}
			f.pg.Restart(top)
			for i, conn := range conns {
				for j := range 3 {
					if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
						t.Fatalf("client %d, statement %d after the restart: got %v, want success", i, j, err)
					}
				}
			}
		})
	}
}

// noSuchDatabase is a server that answers every startup as PostgreSQL
// does for a database that does not exist.
func noSuchDatabase(t *testing.T) string {
	return testenv.Serve(t, nil, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := readStartup(c); err != nil {
			return
		}
		send(c, errorResponse("FATAL", "3D000", "database does not exist"))
	})
}

// TestFailedLoginsLeaveNoPools: logins to databases that do not exist,
// by a user the auth query would look up (before authenticating) or by a
// user of the users file, leave no pool behind; before, each database
// name tried left one for good.
func TestFailedLoginsLeaveNoPools(t *testing.T) {
	t.Parallel()
	srv := noSuchDatabase(t)
	p := New(Config{Users: map[string]string{"auth": "pw", "u": "pw"}, AuthUser: "auth", AuthQuery: "SELECT usename, passwd FROM pg_shadow WHERE usename=$1",
		PoolSize: 2,
		Dial: func(ctx context.Context, _ *upstream.Endpoint) (net.Conn, string, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", srv)
			return c, srv, err
		}})
	t.Cleanup(p.Close)
	addr := testenv.Serve(t, nil, func(c net.Conn) { p.ServeConn(context.Background(), c) })
	for _, user := range []string{"looked-up", "u"} {
		for i := range 5 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:pw@%s/nope_%d?sslmode=disable", user, addr, i))
			cancel()
			if err == nil {
				conn.Close(context.Background())
				t.Fatalf("user %s, database nope_%d: got a session, want a failed login", user, i)
			}
		}
	}
	p.mu.Lock()
	n := len(p.pools)
	p.mu.Unlock()
	if n != 0 {
		t.Errorf("got %d pools after 10 failed logins, want 0", n)
	}
}
