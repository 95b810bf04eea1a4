package pgproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

var (
	asPrimary = upstream.Replication{Role: upstream.RolePrimary}
	asStandby = func(lag time.Duration) upstream.Replication {
		return upstream.Replication{Role: upstream.RoleStandby, Lag: lag, LagKnown: true}
	}
	lagUnknown  = upstream.Replication{Role: upstream.RoleStandby}
	thresholds1 = upstream.Thresholds{Healthy: 1, Unhealthy: 1}
)

// roleCluster is a health-checked cluster of addrs, every endpoint unchecked.
func roleCluster(t testing.TB, addrs ...string) *upstream.Cluster {
	t.Helper()
	p, err := balance.New("round_robin")
	if err != nil {
		t.Fatal(err)
	}
	c := upstream.New(upstream.Options{Name: "orders", Picker: p, HasHealthCheck: true})
	var ts []upstream.Target
	for _, a := range addrs {
		ts = append(ts, upstream.Target{Addr: a})
	}
	c.SetEndpoints(ts)
	return c
}

// observe records one check of the endpoint of addr: r on success, nil
// for a failed check.
func observe(c *upstream.Cluster, addr string, r *upstream.Replication) {
	for _, e := range c.Endpoints() {
		if e.Addr == addr {
			if r != nil {
				e.ObserveReplication(*r)
			}
			e.ObserveCheck(r != nil, thresholds1)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestRoute: which endpoint each target takes given the roles and lags
// the checks found.
func TestRoute(t *testing.T) {
	t.Parallel()
	type state map[string]*upstream.Replication // nil: failed check
	for _, tc := range []struct {
		name   string
		target Target
		maxLag time.Duration
		state  state
		want   []string // endpoints chosen over len(want) routes; "wait", "split" for errors
	}{
		{"primary", TargetPrimary, 0, state{"p:1": &asPrimary, "s:1": ptr(asStandby(0))}, []string{"p:1", "p:1"}},
		{"primary: none yet", TargetPrimary, 0, state{"s:1": ptr(asStandby(0))}, []string{"wait"}},
		{"primary: the dead one is not it", TargetPrimary, 0, state{"p:1": nil, "s:1": ptr(asStandby(0))}, []string{"wait"}},
		{"primary: promoted", TargetPrimary, 0, state{"p:1": nil, "s:1": &asPrimary}, []string{"s:1"}},
		{"primary: split brain", TargetPrimary, 0, state{"p:1": &asPrimary, "s:1": &asPrimary}, []string{"split"}},
		{"standby: balanced", TargetStandby, 0, state{"p:1": &asPrimary, "s:1": ptr(asStandby(0)), "s:2": ptr(asStandby(time.Hour))}, []string{"s:1", "s:2", "s:1", "s:2"}},
		{"standby: over max lag skipped", TargetStandby, 10 * time.Second, state{"p:1": &asPrimary, "s:1": ptr(asStandby(0)), "s:2": ptr(asStandby(11 * time.Second))}, []string{"s:1", "s:1"}},
		{"standby: unknown lag over any limit", TargetStandby, 10 * time.Second, state{"p:1": &asPrimary, "s:1": &lagUnknown}, []string{"wait"}},
		{"standby: unknown lag without a limit", TargetStandby, 0, state{"p:1": &asPrimary, "s:1": &lagUnknown}, []string{"s:1"}},
		{"standby: none", TargetStandby, 0, state{"p:1": &asPrimary, "s:1": nil}, []string{"wait"}},
		{"prefer_standby: a standby", TargetPreferStandby, 10 * time.Second, state{"p:1": &asPrimary, "s:1": ptr(asStandby(time.Second))}, []string{"s:1"}},
		{"prefer_standby: lagging, the primary", TargetPreferStandby, 10 * time.Second, state{"p:1": &asPrimary, "s:1": ptr(asStandby(time.Minute))}, []string{"p:1"}},
		{"prefer_standby: nothing", TargetPreferStandby, 0, state{"p:1": nil, "s:1": nil}, []string{"wait"}},
		{"any", TargetAny, 0, state{"p:1": &asPrimary}, []string{"", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var addrs []string
			for a := range tc.state {
				addrs = append(addrs, a)
			}
			// Endpoint order is the order the policy goes round in.
			slices.Sort(addrs)
			c := roleCluster(t, addrs...)
			for a, r := range tc.state {
				observe(c, a, r)
			}
			p := New(Config{Cluster: c, Target: tc.target, MaxLag: tc.maxLag})
			defer p.Close()
			var got []string
			for range tc.want {
				ep, err := p.route()
				var we *waitError
				var sb *upstream.SplitBrainError
				switch {
				case errors.As(err, &we):
					got = append(got, "wait")
				case errors.As(err, &sb):
					got = append(got, "split")
				case err != nil:
					got = append(got, err.Error())
				case ep == nil:
					got = append(got, "")
				default:
					got = append(got, ep.Addr)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// cutDialer dials one server and keeps the connections, so that a test
// can cut them as a dead server would (no FATAL, the socket gone). It
// keeps a descriptor of each socket and shuts it down: attache holds
// descriptors of its own, and closes the net.Conn it dialed while an
// engine has the connection.
type cutDialer struct {
	mu  sync.Mutex
	fds []int
}

func (d *cutDialer) dial(ctx context.Context, ep *upstream.Endpoint) (net.Conn, string, error) {
	if ep == nil {
		return nil, "", errors.New("a role target dials a chosen endpoint")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", ep.Addr)
	if err != nil {
		return nil, "", err
	}
	fd, err := evloop.DupFD(c)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	d.mu.Lock()
	d.fds = append(d.fds, fd)
	d.mu.Unlock()
	return c, ep.Addr, nil
}

func (d *cutDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, fd := range d.fds {
		syscall.Shutdown(fd, syscall.SHUT_RDWR)
		syscall.Close(fd)
	}
	d.fds = nil
}

// TestPrimaryTarget, with a real server as the primary of a cluster
// whose roles the test sets: a client inside a transaction when its
// server dies gets 08006 and its server connection is discarded, while a
// client between transactions carries on; no primary makes a transaction
// wait until there is one; a split brain refuses the transaction and
// sends it to neither; a server made read-only under a client is retired.
func TestPrimaryTarget(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	dead := deadPort(t)
	c := roleCluster(t, f.pg.Addr, dead)
	observe(c, f.pg.Addr, &asPrimary)
	observe(c, dead, ptr(asStandby(0)))
	d := &cutDialer{}
	serve := func(t *testing.T, cfg Config) (string, *Proxy) {
		t.Helper()
		cfg.Mode, cfg.Target, cfg.Cluster, cfg.Users = TransactionMode, TargetPrimary, c, f.users
		if cfg.QueryWaitTimeout == 0 {
			cfg.QueryWaitTimeout = 20 * time.Second
		}
		cfg.PoolSize, cfg.MaxPrepared, cfg.ResetQuery, cfg.Dial = 4, 100, "DISCARD ALL", d.dial
		// The engine, as in production. On the portable path a server
		// connection held by a client idle inside a transaction is read by
		// nobody, so an unhealthy endpoint's shutdown closes it only at the
		// client's next statement, and the wait for no server connection
		// open below would time out.
		p := New(onPath(t, cfg, true))
		t.Cleanup(p.Close)
		return testenv.Serve(t, nil, func(conn net.Conn) { p.ServeConn(context.Background(), conn) }), p
	}
	f.pg.SQL(t, "CREATE TABLE fo (id int PRIMARY KEY)")
	f.pg.SQL(t, "GRANT ALL ON fo TO app")

	t.Run("08006 inside a transaction", func(t *testing.T) {
		addr, p := serve(t, Config{})
		inTx := connect(t, addr, "app", "app-pw", "")
		between := connect(t, addr, "app", "app-pw", "")
		if _, err := between.Exec(ctx, "INSERT INTO fo VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		tx, err := inTx.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO fo VALUES (2)"); err != nil {
			t.Fatal(err)
		}
		d.cut()
		_, err = tx.Exec(ctx, "INSERT INTO fo VALUES (3)")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "08006" {
			t.Fatalf("statement inside a transaction on a dead server: got %v, want SQLSTATE 08006", err)
		}
		if _, err := between.Exec(ctx, "INSERT INTO fo VALUES (4)"); err != nil {
			t.Errorf("a client between transactions after the server connections died: %v", err)
		}
		st := p.Stats()[0]
		if st.ServersLost != 1 || st.ServersOpen > 2 {
			t.Errorf("stats: lost %d open %d; want 1 lost, the dead connections not kept", st.ServersLost, st.ServersOpen)
		}
		if got := f.pg.SQL(t, "SELECT string_agg(id::text, ',' ORDER BY id) FROM fo"); got != "1,4" {
			t.Errorf("rows: got %s, want 1,4 (the cut transaction rolled back)", got)
		}
	})

	t.Run("an endpoint turned unhealthy loses its server connections", func(t *testing.T) {
		// The endpoint tracks every server connection to it and shuts
		// them down when its checks fail: one held by a client inside a
		// transaction (read by an engine) and one idle in the pool.
		addr, p := serve(t, Config{})
		inTx := connect(t, addr, "app", "app-pw", "")
		idle := connect(t, addr, "app", "app-pw", "")
		tx := inTransaction(t, inTx)
		if _, err := idle.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if st := p.Stats()[0]; st.ServersOpen != 2 {
			t.Fatalf("server connections open: got %d, want 2", st.ServersOpen)
		}
		observe(c, f.pg.Addr, nil) // unhealthy
		observe(c, f.pg.Addr, &asPrimary)
		waitFor(t, 5*time.Second, "the unhealthy endpoint's server connections to close", func() bool { return p.Stats()[0].ServersOpen == 0 })
		_, err := tx.Exec(ctx, "SELECT 1")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "08006" {
			t.Errorf("inside a transaction whose server connection was shut down: got %v, want SQLSTATE 08006", err)
		}
		if _, err := idle.Exec(ctx, "SELECT 1"); err != nil {
			t.Errorf("a client between transactions, on a new server connection: %v", err)
		}
	})

	t.Run("waits for a primary", func(t *testing.T) {
		addr, _ := serve(t, Config{})
		conn := connect(t, addr, "app", "app-pw", "")
		observe(c, f.pg.Addr, nil) // the primary's check fails: no primary
		observe(c, f.pg.Addr, nil)
		done := make(chan error, 1)
		start := time.Now()
		go func() { _, err := conn.Exec(ctx, "INSERT INTO fo VALUES (10)"); done <- err }()
		select {
		case err := <-done:
			t.Fatalf("went through with no primary: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		observe(c, f.pg.Addr, &asPrimary)
		if err := <-done; err != nil {
			t.Fatalf("after the primary came back: %v", err)
		}
		t.Logf("waited %v", time.Since(start).Round(time.Millisecond))

		addr, _ = serve(t, Config{QueryWaitTimeout: 300 * time.Millisecond})
		conn = connect(t, addr, "app", "app-pw", "")
		observe(c, f.pg.Addr, nil)
		_, err := conn.Exec(ctx, "INSERT INTO fo VALUES (11)")
		observe(c, f.pg.Addr, &asPrimary)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "08P01" || pe.Message != `query_wait_timeout: cluster "orders": no primary` {
			t.Errorf("no primary within query_wait_timeout: got %v", err)
		}
	})

	t.Run("a primary that died since its check: the transaction waits", func(t *testing.T) {
		addr, p := serve(t, Config{})
		conn := connect(t, addr, "app", "app-pw", "")
		// The dead endpoint is the primary as far as the checks know.
		observe(c, f.pg.Addr, ptr(asStandby(0)))
		observe(c, dead, &asPrimary)
		done := make(chan error, 1)
		go func() { _, err := conn.Exec(ctx, "INSERT INTO fo VALUES (15)"); done <- err }()
		waitFor(t, 10*time.Second, "connect attempts to the dead primary", func() bool { return p.Stats()[0].LoginErrors >= 2 })
		select {
		case err := <-done:
			t.Fatalf("the transaction did not wait: %v", err)
		default:
		}
		observe(c, dead, nil) // the checks catch up: the standby was promoted
		observe(c, f.pg.Addr, &asPrimary)
		if err := <-done; err != nil {
			t.Fatalf("after the failover: %v", err)
		}
		observe(c, dead, ptr(asStandby(0)))
	})

	t.Run("split brain refused", func(t *testing.T) {
		addr, _ := serve(t, Config{})
		conn := connect(t, addr, "app", "app-pw", "")
		observe(c, dead, &asPrimary)
		_, err := conn.Exec(ctx, "INSERT INTO fo VALUES (20)")
		observe(c, dead, ptr(asStandby(0)))
		var pe *pgconn.PgError
		want := fmt.Sprintf(`cluster "orders": split brain: 2 endpoints claim to be primary (%s, %s): no transaction is sent to either until one is left`, f.pg.Addr, dead)
		if !errors.As(err, &pe) || pe.Code != "08004" || pe.Message != want {
			t.Errorf("write during a split brain: got %v, want 08004 %s", err, want)
		}
		if got := f.pg.SQL(t, "SELECT count(*) FROM fo WHERE id = 20"); got != "0" {
			t.Errorf("the refused write reached the server")
		}
		conn = connect(t, addr, "app", "app-pw", "")
		if _, err := conn.Exec(ctx, "INSERT INTO fo VALUES (21)"); err != nil {
			t.Errorf("once the split brain is over: %v", err)
		}
	})

	t.Run("idle connections of the old primary closed", func(t *testing.T) {
		addr, p := serve(t, Config{})
		conns := []*pgx.Conn{connect(t, addr, "app", "app-pw", ""), connect(t, addr, "app", "app-pw", "")}
		txs := []pgx.Tx{}
		for _, c := range conns {
			txs = append(txs, inTransaction(t, c)) // hold two server connections at once
		}
		for _, tx := range txs {
			tx.Commit(ctx)
		}
		if st := p.Stats()[0]; st.ServersIdle != 2 {
			t.Fatalf("idle servers: got %d, want 2", st.ServersIdle)
		}
		observe(c, f.pg.Addr, ptr(asStandby(0))) // no longer the primary, still up
		defer observe(c, f.pg.Addr, &asPrimary)
		waitFor(t, 10*time.Second, "the old primary's idle connections to close", func() bool { return p.Stats()[0].ServersOpen == 0 })
	})

	t.Run("read-only server retired", func(t *testing.T) {
		addr, p := serve(t, Config{})
		conn := connect(t, addr, "app", "app-pw", "")
		pid := backendPID(t, conn)
		f.pg.SQL(t, "ALTER SYSTEM SET default_transaction_read_only = on")
		f.pg.SQL(t, "SELECT pg_reload_conf()")
		defer func() {
			f.pg.SQL(t, "ALTER SYSTEM RESET default_transaction_read_only")
			f.pg.SQL(t, "SELECT pg_reload_conf()")
		}()
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			_, err = conn.Exec(ctx, "INSERT INTO fo VALUES (30)")
			if err != nil || time.Now().After(deadline) {
				break
			}
			conn.Exec(ctx, "DELETE FROM fo WHERE id = 30")
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "25006" {
			t.Fatalf("write on the read-only server: got %v, want 25006", err)
		}
		if got := backendPID(t, conn); got == pid {
			t.Errorf("the read-only server connection (pid %d) was handed out again", pid)
		}
		if st := p.Stats()[0]; st.ServersIdle > 1 {
			t.Errorf("idle servers: %d", st.ServersIdle)
		}
	})
}

func deadPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}
