package pgproxy

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// rawLogin logs in to attache at addr as app over a bare pgproto3
// Frontend.
func rawLogin(t *testing.T, addr string) *Session {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	s, err := Login(c, "app", "postgres", "app-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func expect(t *testing.T, s *Session, want ...pgproto3.BackendMessage) {
	t.Helper()
	for _, w := range want {
		msg, err := s.FE.Receive()
		if err != nil {
			t.Fatalf("want %T: %v", w, err)
		}
		if got, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("want %T, got error %s: %s", w, got.Code, got.Message)
		}
		if gotT, wantT := typeName(msg), typeName(w); gotT != wantT {
			t.Fatalf("got %s, want %s", gotT, wantT)
		}
	}
}

func typeName(m any) string { return fmt.Sprintf("%T", m) }

// testFlushKeepsServer: in transaction mode, a Parse of the unnamed
// statement answered after a Flush (no Sync) keeps the server connection,
// so a Bind of that statement works even when another client took a
// server connection in between.
func testFlushKeepsServer(t *testing.T, f *fixture) {
	addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 2})
	a := rawLogin(t, addr)
	a.FE.Send(&pgproto3.Parse{Query: "SELECT 41 + 1"})
	a.FE.Send(&pgproto3.Describe{ObjectType: 'S'})
	a.FE.Send(&pgproto3.Flush{})
	if err := a.FE.Flush(); err != nil {
		t.Fatal(err)
	}
	expect(t, a, &pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{}, &pgproto3.RowDescription{})

	// Another client takes a server connection for a transaction: were
	// a's connection back in the pool, it would be this one.
	b := rawLogin(t, addr)
	b.FE.Send(&pgproto3.Query{String: "BEGIN"})
	b.FE.Flush()
	expect(t, b, &pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})

	a.FE.Send(&pgproto3.Bind{})
	a.FE.Send(&pgproto3.Execute{})
	a.FE.Send(&pgproto3.Sync{})
	a.FE.Flush()
	expect(t, a, &pgproto3.BindComplete{}, &pgproto3.DataRow{}, &pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})

	// Clients that leave right after the ReadyForQuery of such a batch
	// give their server connection back: the next one reuses it, no
	// connection is opened (b still holds the other).
	a.FE.Send(&pgproto3.Terminate{})
	a.FE.Flush()
	opened := p.Stats()[0].ServersOpened
	for range 20 {
		c := rawLogin(t, addr)
		c.FE.Send(&pgproto3.Parse{Query: "SELECT 1"})
		c.FE.Send(&pgproto3.Flush{})
		c.FE.Flush()
		expect(t, c, &pgproto3.ParseComplete{})
		c.FE.Send(&pgproto3.Bind{})
		c.FE.Send(&pgproto3.Execute{})
		c.FE.Send(&pgproto3.Sync{})
		c.FE.Flush()
		expect(t, c, &pgproto3.BindComplete{}, &pgproto3.DataRow{}, &pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})
		c.FE.Send(&pgproto3.Terminate{})
		c.FE.Flush()
		c.Conn.Close()
	}
	if n := p.Stats()[0].ServersOpened; n != opened {
		t.Fatalf("servers opened: %d after 20 clients left, want %d (the connection reused)", n, opened)
	}
}
