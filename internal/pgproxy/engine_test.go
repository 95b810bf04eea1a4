package pgproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/evloop"
)

// inEngine checks that clients were served by an engine and how many were
// handed back, where there are engines (Linux).
func inEngine(t *testing.T, p *Proxy, clients, handedBack int64) {
	t.Helper()
	engines := p.startEngines() // started by the first client
	if portableTest(t) {
		if len(engines) != 0 {
			t.Errorf("%d engines on the portable path, want none", len(engines))
		}
		return
	}
	if len(engines) == 0 {
		if runtime.GOOS == "linux" {
			t.Errorf("no engine on Linux")
		}
		return
	}
	if got := p.engineClients.Load(); got != clients {
		t.Errorf("clients served by the engine: got %d, want %d", got, clients)
	}
	if got := p.handedBack.Load(); got != handedBack {
		t.Errorf("clients handed back: got %d, want %d", got, handedBack)
	}
}

func TestEngine(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	t.Run("pipelined extended-protocol batches", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 2})
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for c := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:app-pw@%s/postgres?sslmode=disable", addr))
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close(ctx)
				for round := range 10 {
					b := &pgx.Batch{}
					for i := range 50 {
						b.Queue("SELECT $1::int * 2, $2::text", i, fmt.Sprint(c, round))
						b.Queue("SELECT $1::int + 1", i) // a second named statement
					}
					res := conn.SendBatch(ctx, b)
					for i := range 50 {
						var n int
						var s string
						if err := res.QueryRow().Scan(&n, &s); err != nil || n != 2*i || s != fmt.Sprint(c, round) {
							errs <- fmt.Errorf("client %d round %d item %d: got %d %q %v", c, round, i, n, s, err)
							res.Close()
							return
						}
						if err := res.QueryRow().Scan(&n); err != nil || n != i+1 {
							errs <- fmt.Errorf("client %d round %d item %d: got %d %v, want %d", c, round, i, n, err, i+1)
							res.Close()
							return
						}
					}
					if err := res.Close(); err != nil {
						errs <- err
						return
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
		if st.ServersOpen > 2 || st.PreparedHits == 0 || st.PreparedMisses == 0 {
			t.Errorf("servers %d, prepared hits %d misses %d: want at most 2 servers, hits and misses", st.ServersOpen, st.PreparedHits, st.PreparedMisses)
		}
		inEngine(t, p, 4, 0)
	})

	t.Run("a client that asked for TLS and was refused", func(t *testing.T) {
		// libpq's default (sslmode=prefer) sends an SSLRequest first, on
		// the connection it then logs in on: the 'N' answer must not keep
		// it from the engine.
		addr, p := f.proxy(t, Config{Mode: TransactionMode})
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		req, _ := (&pgproto3.SSLRequest{}).Encode(nil)
		answer := make([]byte, 1)
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, answer); err != nil || answer[0] != 'N' {
			t.Fatalf("SSLRequest: got %q %v, want N", answer, err)
		}
		sess, err := Login(c, "app", "postgres", "app-pw", nil)
		if err != nil {
			t.Fatal(err)
		}
		sess.FE.Send(&pgproto3.Query{String: "SELECT 1"})
		sess.FE.Flush()
		expect(t, sess, &pgproto3.RowDescription{}, &pgproto3.DataRow{}, &pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})
		inEngine(t, p, 1, 0)
	})

	t.Run("prepared statements across server connections", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 3})
		conns := make([]*pgx.Conn, 3)
		for i := range conns {
			conns[i] = connect(t, addr, "app", "app-pw", "")
		}
		// Each client inside a transaction holds its own server
		// connection; from round to round they get them in another order.
		for round := range 10 {
			txs := make([]pgx.Tx, len(conns))
			for j := range conns {
				i := (j + round) % len(conns)
				tx, err := conns[i].Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				txs[i] = tx
				var n int
				if err := tx.QueryRow(ctx, "SELECT $1::int + 100", round*10+i).Scan(&n); err != nil || n != round*10+i+100 {
					t.Fatalf("client %d round %d: got %d %v", i, round, n, err)
				}
			}
			for _, tx := range txs {
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		if st := p.Stats()[0]; st.PreparedHits == 0 || st.ServerParses != 3 {
			t.Errorf("prepared hits %d, server parses %d: want it prepared once on each of 3 servers, then reused", st.PreparedHits, st.ServerParses)
		}
		inEngine(t, p, int64(len(conns)), 0)
	})

	t.Run("hand-back on SET and LISTEN", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 3}) // two pinned, one for other
		conn := connect(t, addr, "app", "app-pw", "")
		other := connect(t, addr, "app", "app-pw", "")
		var s string
		if err := conn.QueryRow(ctx, "SELECT 'before'").Scan(&s); err != nil || s != "before" {
			t.Fatalf("before: got %q %v", s, err)
		}
		if _, err := conn.Exec(ctx, "SET search_path = handed, public"); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SHOW search_path").Scan(&s); err != nil || s != "handed, public" {
			t.Errorf("own SET after the hand-back: got %q %v", s, err)
		}
		if err := other.QueryRow(ctx, "SHOW search_path").Scan(&s); err != nil || s == "handed, public" {
			t.Errorf("another client sees the SET: %q %v", s, err)
		}
		listener := connect(t, addr, "app", "app-pw", "")
		if _, err := listener.Exec(ctx, "LISTEN engine_ch"); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Exec(ctx, "NOTIFY engine_ch, 'hi'"); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := listener.WaitForNotification(wctx)
		if err != nil || n.Payload != "hi" {
			t.Errorf("notification: got %v %v", n, err)
		}
		var i int
		if err := other.QueryRow(ctx, "SELECT 7").Scan(&i); err != nil || i != 7 {
			t.Errorf("engine client after the others' hand-back: %d %v", i, err)
		}
		inEngine(t, p, 3, 2)
	})

	t.Run("a server connection's net.Conn only while goroutines use it", func(t *testing.T) {
		// An engine reads its own descriptor of the socket, and the
		// goroutine path's net.Conn (in Go's netpoller, where each server
		// message would also wake the thread polling it) is closed
		// meanwhile, and made again for a goroutine user: here one server
		// connection between an engine client and a pinned client.
		if runtime.GOOS != "linux" {
			t.Skip("engines are Linux only")
		}
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 1})
		conn := connect(t, addr, "app", "app-pw", "")
		hasConn := func() bool {
			t.Helper()
			idle := idleConns(p)
			if len(idle) != 1 {
				t.Fatalf("idle server connections: got %d, want 1", len(idle))
			}
			return idle[0]
		}
		first := backendPID(t, conn)
		if hasConn() {
			t.Error("after an engine's transaction: the server connection has a net.Conn")
		}
		pinned := connect(t, addr, "app", "app-pw", "")
		if _, err := pinned.Exec(ctx, "SET application_name = 'pinned'"); err != nil {
			t.Fatal(err)
		}
		if got := backendPID(t, pinned); got != first {
			t.Errorf("pinned client's backend: got %d, want %d (the one server connection)", got, first)
		}
		pinned.Close(ctx) // reset, and back to the pool
		waitFor(t, 5*time.Second, "the pinned client's server connection to come back", func() bool { return len(idleConns(p)) != 0 })
		if !hasConn() {
			t.Error("after the goroutine path's use: no net.Conn")
		}
		if got := backendPID(t, conn); got != first {
			t.Errorf("engine client's backend after the pinned one: got %d, want %d", got, first)
		}
		if hasConn() {
			t.Error("back in an engine: the server connection kept its net.Conn")
		}
	})

	t.Run("one server connection between the clients of two engines", func(t *testing.T) {
		// The server stays in the epoll set of the engine that first held
		// it (its home) while it is idle; a client of the other engine
		// reads it meanwhile, and the home engine stops watching it. One
		// thread for two engines: one may wait on it while the other parks.
		prev := runtime.GOMAXPROCS(2)
		defer runtime.GOMAXPROCS(prev)
		loops := evloop.NewGroup(2)
		t.Cleanup(loops.Close)
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 1, Engines: 2, Loops: loops})
		if runtime.GOOS == "linux" && len(p.startEngines()) != 2 {
			t.Fatalf("engines: got %d, want 2", len(p.engines))
		}
		conns := []*pgx.Conn{connect(t, addr, "app", "app-pw", ""), connect(t, addr, "app", "app-pw", "")} // one per engine, in turn
		pids := func(rounds int) map[int]bool {
			seen := map[int]bool{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i, conn := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for r := range rounds {
						tx, err := conn.Begin(ctx)
						if err != nil {
							t.Error(err)
							return
						}
						var pid, n int
						if err := tx.QueryRow(ctx, "SELECT pg_backend_pid(), $1::int", i*1000+r).Scan(&pid, &n); err != nil || n != i*1000+r {
							t.Errorf("client %d round %d: got %d %v", i, r, n, err)
							tx.Rollback(ctx)
							return
						}
						if err := tx.Commit(ctx); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						seen[pid] = true
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			return seen
		}
		first := pids(200)
		if len(first) != 1 {
			t.Fatalf("backends: got %v, want one server connection for both clients", first)
		}
		// Terminated while idle in the pool: the next transaction, on
		// either engine, gets a new one.
		admin := connect(t, f.pg.Addr, f.pg.User, f.pg.Password, "")
		for pid := range first {
			if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
		}
		// Either its home engine watches it and drops it, or (the other
		// engine held it last) the pool looks before it hands it out.
		time.Sleep(100 * time.Millisecond) // for the FATAL; well under peekAfter
		second := pids(50)
		for pid := range second {
			if first[pid] {
				t.Errorf("the terminated backend %d served again", pid)
			}
		}
		if st := p.Stats()[0]; st.ServersOpened != 2 || st.ServersOpen != 1 {
			t.Errorf("servers opened %d, open %d: want 2 and 1", st.ServersOpened, st.ServersOpen)
		}
		inEngine(t, p, 2, 0)
	})

	t.Run("a server connection that closes while idle is not handed out", func(t *testing.T) {
		for _, noEngine := range []bool{false, true} {
			addr, p := f.proxyOn(t, Config{Mode: TransactionMode, PoolSize: 1}, !noEngine)
			conn := connect(t, addr, "app", "app-pw", "")
			var pid, next int
			if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			admin := connect(t, f.pg.Addr, f.pg.User, f.pg.Password, "")
			if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
			if noEngine {
				// Nothing watches it: the pool peeks before handing it out.
				time.Sleep(100 * time.Millisecond) // for the FATAL; well under peekAfter
			} else {
				// Its engine closes it, well before peekAfter (after
				// which the pool would look at it itself).
				waitFor(t, peekAfter/2, "the terminated idle server connection to close", func() bool { return p.Stats()[0].ServersOpen == 0 })
			}
			if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&next); err != nil || next == pid {
				t.Errorf("no engine %v: the next statement: backend %d %v, want a new one", noEngine, next, err)
			}
			if !noEngine {
				inEngine(t, p, 1, 0)
			}
		}
	})

	t.Run("server terminated mid-transaction, then the pool goes on", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 1})
		tx := terminatedInTransaction(t, f, connect(t, addr, "app", "app-pw", ""))
		time.Sleep(50 * time.Millisecond) // the FATAL arrives while the client is idle
		_, err := tx.Exec(ctx, "SELECT 1")
		var pe *pgconn.PgError
		if err == nil || (errors.As(err, &pe) && pe.Code != "08006") {
			t.Errorf("statement on the terminated backend: got %v, want 08006", err)
		}
		next := connect(t, addr, "app", "app-pw", "")
		var n int
		if err := next.QueryRow(ctx, "SELECT 5").Scan(&n); err != nil || n != 5 {
			t.Errorf("the next client on a pool of 1: got %d %v", n, err)
		}
		inEngine(t, p, 2, 0)
	})
}

// terminatedInTransaction opens a transaction on conn and terminates its
// server backend (pg_terminate_backend).
func terminatedInTransaction(t *testing.T, f *fixture, conn *pgx.Conn) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	admin := connect(t, f.pg.Addr, f.pg.User, f.pg.Password, "")
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	return tx
}

// TestServerRestart: PostgreSQL restarts under attache (a fast shutdown
// terminates every session). Clients that were idle go on with their next
// statement on new server connections, as through pgbouncer; a client
// inside a transaction is told 08006 and disconnected, as the server
// itself would have done. No subtests: the restarted server belongs to
// the test that started it.
func TestServerRestart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, engine := range []bool{true, false} {
		addr, p := f.proxyOn(t, Config{Mode: TransactionMode, PoolSize: 3}, engine)
		idle := make([]*pgx.Conn, 5)
		before := map[int]bool{}
		for i := range idle {
			idle[i] = connect(t, addr, "app", "app-pw", "")
			before[backendPID(t, idle[i])] = true
		}
		busy := connect(t, addr, "app", "app-pw", "")
		tx := inTransaction(t, busy)
		f.pg.Restart(t)
		for i, c := range idle {
			var n, pid int
			if err := c.QueryRow(ctx, "SELECT $1::int, pg_backend_pid()", i).Scan(&n, &pid); err != nil || n != i {
				t.Errorf("engine %v: idle client %d after the restart: got %d %v", engine, i, n, err)
			} else if before[pid] {
				t.Errorf("engine %v: idle client %d after the restart: served by backend %d, of before it", engine, i, pid)
			}
		}
		_, err := tx.Exec(ctx, "SELECT 1")
		var pe *pgconn.PgError
		if err == nil || (errors.As(err, &pe) && pe.Code != "08006") {
			t.Errorf("engine %v: the transaction across the restart: got %v, want 08006", engine, err)
		}
		if st := p.Stats()[0]; st.ServersOpen > 3 {
			t.Errorf("engine %v: servers open after the restart: %d, want at most the pool size", engine, st.ServersOpen)
		}
	}
}

// idleConns returns, for each idle server connection of p's pools,
// whether it has its net.Conn (read while it is idle: nobody else's then).
func idleConns(p *Proxy) []bool {
	p.mu.Lock()
	pools := p.poolsLocked()
	p.mu.Unlock()
	var idle []bool
	for _, pl := range pools {
		pl.mu.Lock()
		for _, r := range pl.routes {
			for _, s := range r.idle {
				idle = append(idle, s.conn != nil)
			}
		}
		pl.mu.Unlock()
	}
	return idle
}
