package pgproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// cancelHold is a TCP relay in front of a PostgreSQL server that passes
// connections through, except cancel requests: each is announced on
// arrived and held until release is closed, then forwarded; delivered is
// told once the server has handled it (closed the connection).
type cancelHold struct {
	addr      string
	arrived   chan struct{}
	release   chan struct{}
	delivered chan struct{}
	cancels   atomic.Int64
}

func newCancelHold(t *testing.T, target string) *cancelHold {
	h := &cancelHold{arrived: make(chan struct{}, 16), release: make(chan struct{}), delivered: make(chan struct{}, 16)}
	h.addr = testenv.Serve(t, nil, func(c net.Conn) {
		defer c.Close()
		var head [8]byte
		if _, err := io.ReadFull(c, head[:]); err != nil {
			return
		}
		cancel := binary.BigEndian.Uint32(head[:4]) == 16 && binary.BigEndian.Uint32(head[4:]) == codeCancel
		var key [8]byte
		if cancel {
			if _, err := io.ReadFull(c, key[:]); err != nil {
				return
			}
			h.cancels.Add(1)
			h.arrived <- struct{}{}
			<-h.release
		}
		s, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer s.Close()
		s.Write(head[:])
		if cancel {
			s.Write(key[:])
			io.Copy(io.Discard, s) // the server closes once it has signalled the backend
			h.delivered <- struct{}{}
			return
		}
		go func() {
			io.Copy(s, c)
			s.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(c, s)
	})
	return h
}

// proxyVia serves a Proxy whose server connections go to addr, on the
// engine or (false) the portable path.
func (f *fixture) proxyVia(t *testing.T, addr string, cfg Config, engine bool) string {
	t.Helper()
	cfg = onPath(t, cfg, engine)
	cfg.Users, cfg.QueryWaitTimeout = f.users, 20*time.Second
	cfg.Dial = func(ctx context.Context, _ *upstream.Endpoint) (net.Conn, string, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return c, addr, err
	}
	p := New(cfg)
	t.Cleanup(p.Close)
	return testenv.Serve(t, nil, func(c net.Conn) { p.ServeConn(context.Background(), c) })
}

// waitingOnLock waits until a backend waits for a lock in a statement
// containing text.
func waitingOnLock(t *testing.T, admin *pgx.Conn, text string) {
	t.Helper()
	waitFor(t, 15*time.Second, "a statement waiting for a lock: "+text, func() bool {
		var n int
		err := admin.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()", text).Scan(&n)
		return err == nil && n > 0
	})
}

// TestStaleCancel: a cancel request for client A that reaches the server
// only after A's statement ended (held up on its way) never cancels the
// statement of client B that the same server connection serves by then,
// in transaction mode, on both paths. Before, A's server connection went
// back to the pool, B got it, and the late cancel cancelled B's statement
// (57014).
func TestStaleCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		noEngine bool
	}{
		{"engine", false},
		{"goroutines", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hold := newCancelHold(t, f.pg.Addr)
			addr := f.proxyVia(t, hold.addr, Config{Mode: TransactionMode, PoolSize: 1}, !tc.noEngine)
			admin := connect(t, f.pg.Addr, f.pg.User, f.pg.Password, "")
			lockA, lockB := 1001, 1002
			if tc.noEngine {
				lockA, lockB = 2001, 2002
			}
			for _, k := range []int{lockA, lockB} {
				if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock($1)", k); err != nil {
					t.Fatal(err)
				}
			}
			a := connect(t, addr, "app", "app-pw", "")
			b := connect(t, addr, "app", "app-pw", "")
			statement := func(conn *pgx.Conn, lock int) chan error {
				done := make(chan error, 1)
				go func() {
					_, err := conn.Exec(ctx, fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", lock))
					done <- err
				}()
				return done
			}
			result := func(done chan error, who string) error {
				select {
				case err := <-done:
					return err
				case <-time.After(20 * time.Second):
					t.Fatalf("%s's statement did not end", who)
					return nil
				}
			}

			doneA := statement(a, lockA)
			waitingOnLock(t, admin, fmt.Sprintf("pg_advisory_xact_lock(%d)", lockA))
			cancelled := make(chan error, 1)
			go func() { cancelled <- a.PgConn().CancelRequest(ctx) }()
			select {
			case <-hold.arrived: // forwarded by attache, held on its way
			case <-time.After(20 * time.Second):
				t.Fatal("the cancel request for A's running statement did not reach the server")
			}
			admin.Exec(ctx, "SELECT pg_advisory_unlock($1)", lockA)
			if err := result(doneA, "A"); err != nil {
				t.Fatalf("A: got %v, want success (its cancel is still held)", err)
			}

			doneB := statement(b, lockB)
			waitingOnLock(t, admin, fmt.Sprintf("pg_advisory_xact_lock(%d)", lockB))
			close(hold.release)
			select {
			case <-hold.delivered:
			case <-time.After(20 * time.Second):
				t.Fatal("the held cancel request was not handled by the server")
			}
			admin.Exec(ctx, "SELECT pg_advisory_unlock($1)", lockB)
			if err := result(doneB, "B"); err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) {
					t.Fatalf("B: got %s %s, want success: A's late cancel reached B's statement", pe.Code, pe.Message)
				}
				t.Fatalf("B: got %v, want success", err)
			}
			<-cancelled
		})
	}
}

// TestCancelNothingRunning: a cancel request for a client that has no
// statement in flight is not forwarded at all, in either pool mode; one
// for a running statement is.
func TestCancelNothingRunning(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mode Mode
		tx   bool // the client is idle inside a transaction (holding its server)
	}{
		{"session mode, idle", SessionMode, false},
		{"transaction mode, idle in a transaction", TransactionMode, true},
		{"transaction mode, idle", TransactionMode, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hold := newCancelHold(t, f.pg.Addr)
			close(hold.release)
			addr := f.proxyVia(t, hold.addr, Config{Mode: tc.mode, PoolSize: 1}, true)
			a := connect(t, addr, "app", "app-pw", "")
			if _, err := a.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			if tc.tx {
				tx := inTransaction(t, a)
				defer tx.Rollback(ctx)
			}
			if err := a.PgConn().CancelRequest(ctx); err != nil {
				t.Fatal(err)
			}
			if n := hold.cancels.Load(); n != 0 {
				t.Errorf("got %d cancel requests forwarded, want 0", n)
			}
			// A running statement's cancel is forwarded (and cancels it).
			done := make(chan error, 1)
			go func() {
				_, err := a.Exec(ctx, "SELECT pg_sleep(60)")
				done <- err
			}()
			admin := connect(t, f.pg.Addr, f.pg.User, f.pg.Password, "")
			waitFor(t, 15*time.Second, "pg_sleep running", func() bool {
				var n int
				admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'").Scan(&n)
				return n > 0
			})
			if err := a.PgConn().CancelRequest(ctx); err != nil {
				t.Fatal(err)
			}
			var pe *pgconn.PgError
			select {
			case err := <-done:
				if !errors.As(err, &pe) || pe.Code != "57014" {
					t.Errorf("got %v, want 57014 query_canceled", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the cancelled statement did not end")
			}
		})
	}
}
