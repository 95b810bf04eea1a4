package pgproxy

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// fixture is a private PostgreSQL with role "app" (password "app-pw") and
// table items, shared by the subtests of one test.
type fixture struct {
	pg    *testenv.PG
	users map[string]string
}

func newFixture(t *testing.T) *fixture {
	pg := testenv.Postgres(t)
	f := &fixture{pg: pg, users: map[string]string{pg.User: pg.Password, "app": "app-pw"}}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, pg.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{
		"CREATE ROLE app LOGIN PASSWORD 'app-pw'",
		"CREATE TABLE items (id int PRIMARY KEY, body text)",
		"GRANT ALL ON items TO app",
		"GRANT CREATE ON SCHEMA public TO app",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return f
}

// proxy serves a Proxy for f's server on a free port, on the engine (see
// onPath), and returns its address.
func (f *fixture) proxy(t testing.TB, cfg Config) (string, *Proxy) {
	t.Helper()
	return f.proxyOn(t, cfg, true)
}

// proxyOn is proxy on the engine or (false) the portable path.
func (f *fixture) proxyOn(t testing.TB, cfg Config, engine bool) (string, *Proxy) {
	t.Helper()
	if cfg.Users == nil {
		cfg.Users = f.users
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 2
	}
	if cfg.MaxPrepared == 0 {
		cfg.MaxPrepared = 100
	}
	if cfg.QueryWaitTimeout == 0 {
		cfg.QueryWaitTimeout = 20 * time.Second
	}
	if cfg.ResetQuery == "" {
		cfg.ResetQuery = "DISCARD ALL"
	}
	cfg = onPath(t, cfg, engine)
	addr := f.pg.Addr
	cfg.Dial = func(ctx context.Context, ep *upstream.Endpoint) (net.Conn, string, error) {
		a := addr
		if ep != nil {
			a = ep.Addr
		}
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", a)
		return c, a, err
	}
	p := New(cfg)
	t.Cleanup(p.Close)
	return testenv.Serve(t, nil, func(c net.Conn) { p.ServeConn(context.Background(), c) }), p
}

func connect(t *testing.T, addr, user, password string, extra string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable%s", user, password, addr, extra))
	if err != nil {
		t.Fatalf("connect through attache: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func backendPID(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var pid int
	if err := conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// inTransaction begins a transaction on conn and runs a statement in it,
// so that its client holds a server connection until the transaction ends.
func inTransaction(t *testing.T, conn *pgx.Conn) pgx.Tx {
	t.Helper()
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	return tx
}

func TestPostgres(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	t.Run("simple and extended", func(t *testing.T) {
		addr, _ := f.proxy(t, Config{Mode: TransactionMode})
		for _, mode := range []string{"simple_protocol", "exec", "cache_statement", "cache_describe", "describe_exec"} {
			conn := connect(t, addr, "app", "app-pw", "&default_query_exec_mode="+mode)
			var n int
			var s string
			if err := conn.QueryRow(ctx, "SELECT $1::int + 1, $2::text", 41, "x").Scan(&n, &s); err != nil || n != 42 || s != "x" {
				t.Errorf("%s: got %d %q %v, want 42 x", mode, n, s, err)
			}
			// An error inside an extended batch, then the connection still works.
			if _, err := conn.Exec(ctx, "SELECT 1/$1::int", 0); err == nil {
				t.Errorf("%s: division by zero went through", mode)
			}
			if err := conn.QueryRow(ctx, "SELECT 7").Scan(&n); err != nil || n != 7 {
				t.Errorf("%s: after an error got %d %v", mode, n, err)
			}
		}
	})

	t.Run("prepared statements across server connections", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 3})
		conns := []*pgx.Conn{}
		for range 4 {
			conns = append(conns, connect(t, addr, "app", "app-pw", ""))
		}
		// Hold server connections in other clients so that the client
		// lands on different ones.
		for i := range 30 {
			c := conns[i%len(conns)]
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var n int
			if err := tx.QueryRow(ctx, "SELECT $1::int * 2", i).Scan(&n); err != nil || n != 2*i {
				t.Fatalf("round %d: got %d %v", i, n, err)
			}
			if i%3 == 0 {
				tx.Rollback(ctx)
			} else {
				tx.Commit(ctx)
			}
		}
		st := p.Stats()[0]
		if st.PreparedMisses == 0 || st.PreparedHits == 0 || st.ServerParses > 3*4 {
			t.Errorf("stats: %+v; want hits and misses and at most one server parse per server and statement", st)
		}
		// Deallocate on the client side, then prepare again.
		conn := conns[0]
		if _, err := conn.Prepare(ctx, "mine", "SELECT $1::text || 'y'"); err != nil {
			t.Fatal(err)
		}
		if err := conn.Deallocate(ctx, "mine"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Prepare(ctx, "mine", "SELECT $1::text || 'z'"); err != nil {
			t.Fatal(err)
		}
		var s string
		if err := conn.QueryRow(ctx, "mine", "a").Scan(&s); err != nil || s != "az" {
			t.Errorf("re-prepared statement: got %q %v, want az", s, err)
		}
		if _, err := conn.Exec(ctx, "DEALLOCATE ALL"); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT 'after deallocate all'").Scan(&s); err != nil {
			t.Errorf("after DEALLOCATE ALL: %v", err)
		}
	})

	t.Run("LRU eviction", func(t *testing.T) {
		skipOnPortable(t)
		addr, _ := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 1, MaxPrepared: 3})
		conn := connect(t, addr, "app", "app-pw", "")
		for round := range 3 {
			for i := range 8 {
				var n int
				if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT $1::int + %d", i), round).Scan(&n); err != nil || n != round+i {
					t.Fatalf("statement %d round %d: got %d %v", i, round, n, err)
				}
			}
		}
		var prepared int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements", pgx.QueryExecModeSimpleProtocol).Scan(&prepared); err != nil || prepared > 3 {
			t.Errorf("statements prepared on the server: %d %v, want at most 3", prepared, err)
		}
	})

	t.Run("COPY and large rows", func(t *testing.T) {
		addr, _ := f.proxy(t, Config{Mode: TransactionMode})
		conn := connect(t, addr, "app", "app-pw", "")
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS copied (id int, body text)"); err != nil {
			t.Fatal(err)
		}
		rows := [][]any{}
		for i := range 5000 {
			rows = append(rows, []any{i, strings.Repeat("r", i%100)})
		}
		n, err := conn.CopyFrom(ctx, pgx.Identifier{"copied"}, []string{"id", "body"}, pgx.CopyFromRows(rows))
		if err != nil || n != 5000 {
			t.Fatalf("COPY FROM: %d %v", n, err)
		}
		var buf bytes.Buffer
		tag, err := conn.PgConn().CopyTo(ctx, &buf, "COPY copied TO STDOUT")
		if err != nil || tag.RowsAffected() != 5000 || strings.Count(buf.String(), "\n") != 5000 {
			t.Fatalf("COPY TO: %v %v, %d lines", tag, err, strings.Count(buf.String(), "\n"))
		}
		big := strings.Repeat("0123456789", 2<<20) // 20 MB
		var got string
		if err := conn.QueryRow(ctx, "SELECT $1::text", big).Scan(&got); err != nil || got != big {
			t.Fatalf("large row: %d bytes back, %v", len(got), err)
		}
	})

	t.Run("no session state leaks", func(t *testing.T) {
		skipOnPortable(t) // long; the reset it checks is shared code
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 10})
		const clients = 500
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		// All clients are connected at once; their SCRAM handshakes (a
		// PBKDF2 each in pgx) take turns, so that the race detector on two
		// cores does not starve everything else.
		connecting := make(chan struct{}, 8)
		var connected sync.WaitGroup
		connected.Add(clients)
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
				defer cancel()
				connecting <- struct{}{}
				conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:app-pw@%s/postgres?sslmode=disable", addr))
				<-connecting
				connected.Done()
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close(ctx)
				connected.Wait()
				var s string
				switch i % 4 {
				case 0: // SET: pinned, sees its own value
					if _, err := conn.Exec(ctx, fmt.Sprintf("SET application_name = 'leak%d'", i)); err != nil {
						errs <- err
						return
					}
					if err := conn.QueryRow(ctx, "SHOW application_name").Scan(&s); err != nil || s != fmt.Sprintf("leak%d", i) {
						errs <- fmt.Errorf("client %d: own SET: got %q %v", i, s, err)
					}
				case 1: // temp table: pinned, sees its own table
					if _, err := conn.Exec(ctx, "CREATE TEMP TABLE mine (x int)"); err != nil {
						errs <- err
						return
					}
					if _, err := conn.Exec(ctx, "INSERT INTO mine VALUES (1)"); err != nil {
						errs <- fmt.Errorf("client %d: own temp table: %v", i, err)
					}
				default: // must never see another client's state
					for range 3 {
						if err := conn.QueryRow(ctx, "SHOW application_name").Scan(&s); err != nil || strings.HasPrefix(s, "leak") {
							errs <- fmt.Errorf("client %d: application_name %q leaked (%v)", i, s, err)
						}
						var n int
						if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_class WHERE relname = 'mine' AND pg_table_is_visible(oid)").Scan(&n); err != nil || n != 0 {
							errs <- fmt.Errorf("client %d: sees %d temp tables (%v)", i, n, err)
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		st := p.Stats()[0]
		if st.ServersOpen > 10 {
			t.Errorf("servers open: %d, want at most 10", st.ServersOpen)
		}
		if st.Pins["SET"] != clients/4 || st.Pins["CREATE TEMP TABLE"] != clients/4 {
			t.Errorf("pins: %v, want %d of each", st.Pins, clients/4)
		}
		// In the engine, each pinned client was handed back.
		inEngine(t, p, clients, clients/2)
	})

	t.Run("startup parameters", func(t *testing.T) {
		addr, _ := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 1})
		a := connect(t, addr, "app", "app-pw", "&application_name=alpha&timezone=Asia/Tokyo")
		b := connect(t, addr, "app", "app-pw", "")
		for range 3 {
			var s string
			if err := a.QueryRow(ctx, "SELECT current_setting('application_name') || ' ' || current_setting('TimeZone')").Scan(&s); err != nil || s != "alpha Asia/Tokyo" {
				t.Errorf("a: got %q %v", s, err)
			}
			if err := b.QueryRow(ctx, "SELECT current_setting('application_name') || ' ' || current_setting('TimeZone')").Scan(&s); err != nil || strings.Contains(s, "alpha") || strings.Contains(s, "Tokyo") {
				t.Errorf("b: got %q %v", s, err)
			}
		}
		if got := a.PgConn().ParameterStatus("application_name"); got != "alpha" {
			t.Errorf("ParameterStatus application_name: got %q, want alpha", got)
		}
	})

	t.Run("LISTEN NOTIFY through pinning", func(t *testing.T) {
		addr, _ := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 2})
		l := connect(t, addr, "app", "app-pw", "")
		if _, err := l.Exec(ctx, "LISTEN chan1"); err != nil {
			t.Fatal(err)
		}
		n := connect(t, addr, "app", "app-pw", "")
		for i := range 3 {
			if _, err := n.Exec(ctx, "SELECT pg_notify('chan1', $1)", fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			note, err := l.WaitForNotification(wctx)
			cancel()
			if err != nil || note.Payload != fmt.Sprint(i) {
				t.Fatalf("notification %d: got %+v %v", i, note, err)
			}
		}
	})

	t.Run("wrong passwords", func(t *testing.T) {
		addr, _ := f.proxy(t, Config{Mode: TransactionMode})
		for _, tc := range []struct{ user, pass string }{{"app", "nope"}, {"nobody", "x"}, {"app", ""}} {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := pgx.Connect(cctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", tc.user, tc.pass, addr))
			cancel()
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "28P01" {
				t.Errorf("user %q password %q: got %v, want SQLSTATE 28P01", tc.user, tc.pass, err)
			}
		}
	})

	t.Run("md5 and SCRAM secrets", func(t *testing.T) {
		skipOnPortable(t)
		v := NewVerifier("app-pw", 4096).String()
		for name, secret := range map[string]string{"md5": md5Secret("app", "app-pw"), "scram": v} {
			users := map[string]string{"app": secret}
			cfg := Config{Mode: TransactionMode, Users: users}
			addr, _ := f.proxy(t, cfg)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := pgx.Connect(cctx, fmt.Sprintf("postgres://app:wrong@%s/postgres?sslmode=disable", addr))
			cancel()
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "28P01" {
				t.Errorf("%s: wrong password: got %v, want 28P01", name, err)
			}
			cctx, cancel = context.WithTimeout(ctx, 10*time.Second)
			c, err := pgx.Connect(cctx, fmt.Sprintf("postgres://app:app-pw@%s/postgres?sslmode=disable", addr))
			cancel()
			// Authenticated by attache; an md5 secret logs in only to md5
			// servers (the server's 28P01), a SCRAM secret unlike the
			// server's cannot be passed through (TestSCRAMPassThrough).
			if err == nil {
				c.Close(ctx)
			} else if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || !strings.Contains(pe.Message, "server login failed") && !strings.Contains(pe.Message, "another salt") {
				t.Errorf("%s: right password: got %v, want success or a server login failure", name, err)
			}
		}
	})

	t.Run("cancel", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 1})
		defer inEngine(t, p, 1, 0)
		conn := connect(t, addr, "app", "app-pw", "")
		// pgx sends a CancelRequest only when asked to: do it once the
		// server runs the sleep.
		admin := connect(t, f.pg.Addr, f.pg.User, f.pg.Password, "")
		go func() {
			for range 200 {
				time.Sleep(50 * time.Millisecond)
				var n int
				admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'").Scan(&n)
				if n > 0 {
					conn.PgConn().CancelRequest(ctx)
					return
				}
			}
		}()
		start := time.Now()
		_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("got %v after %v, want SQLSTATE 57014 (query canceled)", err, time.Since(start))
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
			t.Errorf("after cancel: %v", err)
		}
	})

	t.Run("terminated backend mid-transaction", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 2})
		conn := connect(t, addr, "app", "app-pw", "")
		other := connect(t, addr, "app", "app-pw", "")
		tx := terminatedInTransaction(t, f, conn)
		_, err := tx.Exec(ctx, "SELECT 1")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "08006" || !strings.Contains(pe.Detail, "57P01") {
			t.Errorf("statement on the terminated backend: got %v, want 08006 with the server's 57P01 in the detail", err)
		}
		var n int
		if err := other.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
			t.Errorf("another client: got %d %v", n, err)
		}
		fresh := connect(t, addr, "app", "app-pw", "")
		if err := fresh.QueryRow(ctx, "SELECT 3").Scan(&n); err != nil || n != 3 {
			t.Errorf("a new client: got %d %v", n, err)
		}
		if p.Stats()[0].ServersLost == 0 {
			t.Errorf("servers_lost not counted")
		}
		inEngine(t, p, 3, 0)
	})

	t.Run("client leaves mid-transaction", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 1})
		defer inEngine(t, p, 2, 0)
		conn := connect(t, addr, "app", "app-pw", "")
		tx, _ := conn.Begin(ctx)
		if _, err := tx.Exec(ctx, "INSERT INTO items VALUES (1000, 'uncommitted')"); err != nil {
			t.Fatal(err)
		}
		conn.PgConn().Conn().Close() // no Terminate, no ROLLBACK
		next := connect(t, addr, "app", "app-pw", "")
		var n int
		if err := next.QueryRow(ctx, "SELECT count(*) FROM items WHERE id = 1000").Scan(&n); err != nil || n != 0 {
			t.Errorf("after the client left mid-transaction: %d rows, %v; want 0", n, err)
		}
		var status string
		if err := next.QueryRow(ctx, "SELECT current_setting('transaction_isolation')").Scan(&status); err != nil {
			t.Errorf("next client: %v", err)
		}
	})

	t.Run("query_wait_timeout", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 1, QueryWaitTimeout: 300 * time.Millisecond})
		holder := connect(t, addr, "app", "app-pw", "")
		waiter := connect(t, addr, "app", "app-pw", "")
		tx := inTransaction(t, holder)
		_, err := waiter.Exec(ctx, "SELECT 1")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "08P01" || pe.Message != "query_wait_timeout" {
			t.Errorf("waiting client: got %v, want 08P01 query_wait_timeout", err)
		}
		if _, err := tx.Exec(ctx, "SELECT 2"); err != nil {
			t.Errorf("the holding client was affected: %v", err)
		}
		tx.Commit(ctx)
		if p.Stats()[0].WaitTimeouts != 1 {
			t.Errorf("wait timeouts: %d, want 1", p.Stats()[0].WaitTimeouts)
		}
		inEngine(t, p, 2, 0)
	})

	t.Run("client TLS", func(t *testing.T) {
		skipOnPortable(t)
		ca := testenv.NewCA(t, "ca")
		certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		caFile, _, _ := ca.Files(t, t.TempDir(), "x")
		tc := &tls.Config{Certificates: []tls.Certificate{cert}}
		addr, _ := f.proxy(t, Config{Mode: TransactionMode, ClientTLS: tc, RequireTLS: true})
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err = pgx.Connect(cctx, fmt.Sprintf("postgres://app:app-pw@%s/postgres?sslmode=disable", addr))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "28000" {
			t.Errorf("plain client with client_tls mode require: got %v, want 28000", err)
		}
		secure, err := pgx.Connect(cctx, fmt.Sprintf("postgres://app:app-pw@%s/postgres?sslmode=verify-full&sslrootcert=%s", addr, caFile))
		if err != nil {
			t.Fatalf("verify-full through attache: %v", err)
		}
		defer secure.Close(ctx)
		if !secure.PgConn().Conn().(*tls.Conn).ConnectionState().HandshakeComplete {
			t.Errorf("not TLS")
		}
		var n int
		if err := secure.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
			t.Errorf("query over TLS: %v", err)
		}
	})

	t.Run("idle server terminated", func(t *testing.T) {
		addr, _ := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 2})
		conn := connect(t, addr, "app", "app-pw", "")
		pid := backendPID(t, conn)
		admin := connect(t, f.pg.Addr, f.pg.User, f.pg.Password, "")
		if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
		// The pool finds the connection dead before handing it out (it
		// checks connections idle for more than peekAfter).
		time.Sleep(2 * peekAfter)
		for range 3 {
			if got := backendPID(t, conn); got == pid {
				t.Errorf("got the terminated backend %d again", pid)
			}
		}
	})

	t.Run("endpoint removed drains its servers", func(t *testing.T) {
		var removed atomic.Bool
		addr, _ := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 2, Keep: func(string) bool { return !removed.Load() }})
		conn := connect(t, addr, "app", "app-pw", "")
		idle := backendPID(t, conn) // goes back to the pool
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var inTx int
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&inTx); err != nil {
			t.Fatal(err)
		}
		// Discovery drops the endpoint: the open transaction goes on...
		removed.Store(true)
		var again int
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&again); err != nil || again != inTx {
			t.Fatalf("open transaction after its endpoint was removed: got pid %d, %v; want %d", again, err, inTx)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		// ...and no server connection of the removed endpoint takes a new
		// one: the pooled and the released one are closed.
		removed.Store(false)
		if got := backendPID(t, conn); got == idle || got == inTx {
			t.Errorf("new transaction ran on backend %d of the removed endpoint (pooled %d, released %d)", got, idle, inTx)
		}
	})

	t.Run("reserve pool", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 1, ReservePoolSize: 1, ReservePoolTimeout: 100 * time.Millisecond})
		holder := connect(t, addr, "app", "app-pw", "")
		other := connect(t, addr, "app", "app-pw", "")
		tx := inTransaction(t, holder)
		defer tx.Rollback(ctx)
		var n int
		if err := other.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
			t.Fatalf("through the reserve: got %d %v", n, err)
		}
		if st := p.Stats()[0]; st.ReserveUsed != 1 || st.ServersOpen != 2 {
			t.Errorf("reserve used %d, servers %d; want 1 and 2", st.ReserveUsed, st.ServersOpen)
		}
	})

	t.Run("psql", func(t *testing.T) {
		skipOnPortable(t)
		psql, err := exec.LookPath("psql")
		if err != nil {
			testenv.Unavailable(t, "psql not found: install Debian package postgresql-client")
		}
		addr, _ := f.proxy(t, Config{Mode: TransactionMode})
		host, port, _ := net.SplitHostPort(addr)
		cmd := exec.Command(psql, "-h", host, "-p", port, "-U", "app", "-d", "postgres", "-X", "-At", "-v", "ON_ERROR_STOP=1",
			"-c", "SELECT 40 + 2", "-c", "SHOW application_name", "-c", "BEGIN; SELECT 'in'; COMMIT;")
		cmd.Env = append(os.Environ(), "PGPASSWORD=app-pw", "PGSSLMODE=prefer", "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "42\npsql\nBEGIN\nin\nCOMMIT\n" {
			t.Errorf("psql: %v\n%s", err, out)
		}
	})

	t.Run("pgbench", func(t *testing.T) {
		skipOnPortable(t)
		pgbench, err := exec.LookPath("pgbench")
		if err != nil {
			testenv.Unavailable(t, "pgbench not found: install Debian package postgresql-contrib")
		}
		users := map[string]string{f.pg.User: f.pg.Password}
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 4, Users: users})
		host, port, _ := net.SplitHostPort(addr)
		env := append(os.Environ(), "PGPASSWORD="+f.pg.Password)
		run := func(args ...string) string {
			cmd := exec.Command(pgbench, append([]string{"-h", host, "-p", port, "-U", f.pg.User}, args...)...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("pgbench %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		run("-i", "-s", "1", "-q", "postgres")
		for _, mode := range []string{"simple", "extended", "prepared"} {
			// One thread per client: pgbench -M prepared prepares with a
			// blocking PQprepare, which would stall a thread's other
			// clients (holding server connections in their transactions)
			// while one of them waits for a server connection.
			out := run("-c", "12", "-j", "12", "-t", "50", "-M", mode, "-n", "postgres")
			if !strings.Contains(out, "number of transactions actually processed: 600/600") {
				t.Errorf("pgbench -M %s:\n%s", mode, out)
			}
		}
		if st := p.Stats()[0]; st.ServersOpen > 4 {
			t.Errorf("servers open: %d", st.ServersOpen)
		}
	})

	t.Run("Flush keeps the server", func(t *testing.T) { testFlushKeepsServer(t, f) })

	t.Run("min_pool_size and server_idle_timeout", func(t *testing.T) {
		skipOnPortable(t)
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 4, MinPoolSize: 3, ServerIdleTimeout: time.Second})
		conn := connect(t, addr, "app", "app-pw", "")
		backendPID(t, conn)
		// The pool grows to min_pool_size and, idle, stays there.
		waitFor(t, 15*time.Second, "min_pool_size connections", func() bool { return p.Stats()[0].ServersOpen == 3 })
		// Above the minimum, idle connections close.
		// Four transactions open at once, each holding a server connection
		// until all have begun (no sleeps: logins are slow under -race).
		var txs []pgx.Tx
		for range 4 {
			tx, err := connect(t, addr, "app", "app-pw", "").Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			txs = append(txs, tx)
		}
		for _, tx := range txs {
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			tx.Commit(ctx)
		}
		if n := p.Stats()[0].ServersOpened; n < 4 {
			t.Fatalf("servers opened: %d, want 4 for 4 transactions at once", n)
		}
		waitFor(t, 15*time.Second, "idle connections above min_pool_size to close", func() bool { return p.Stats()[0].ServersOpen == 3 })
	})

	t.Run("session mode", func(t *testing.T) {
		skipOnPortable(t)
		addr, _ := f.proxy(t, Config{Mode: SessionMode, PoolSize: 1})
		a := connect(t, addr, "app", "app-pw", "")
		if _, err := a.Exec(ctx, "SET TimeZone = 'Europe/Paris'"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Prepare(ctx, "s1", "SELECT 5"); err != nil {
			t.Fatal(err)
		}
		pid := backendPID(t, a)
		a.Close(ctx)
		b := connect(t, addr, "app", "app-pw", "")
		var tz string
		if err := b.QueryRow(ctx, "SHOW TimeZone").Scan(&tz); err != nil || tz == "Europe/Paris" {
			t.Errorf("after reset: TimeZone %q %v", tz, err)
		}
		if got := backendPID(t, b); got != pid {
			t.Errorf("session mode did not reuse the server connection: pid %d then %d", pid, got)
		}
		// A client that leaves right after its last answer: the server
		// is reset and reused every time, never closed (a relay that
		// answered before serve finished writing once left a Sync owed).
		b.Close(ctx)
		for i := range 30 {
			c := connect(t, addr, "app", "app-pw", "")
			got := backendPID(t, c)
			c.Close(ctx)
			if got != pid {
				t.Fatalf("client %d: session mode did not reuse the server connection: pid %d then %d", i, pid, got)
			}
		}
	})
}

// md5Secret is a userlist md5 secret.
func md5Secret(user, password string) string {
	h := md5.Sum([]byte(password + user))
	return "md5" + hex.EncodeToString(h[:])
}

// waitFor polls cond until it holds, failing the test when it still does
// not after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", within, what)
		}
	}
}
