package listener

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

func reply(word string) Handler {
	return HandlerFunc(func(_ context.Context, c net.Conn) {
		defer c.Close()
		c.Write([]byte(word))
	})
}

func get(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "dial error"
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestApplyIsATransaction: settings swap in place on a kept address; a
// failed bind changes nothing; a removed address stops accepting.
func TestApplyIsATransaction(t *testing.T) {
	p := NewPool(slog.New(slog.DiscardHandler))
	defer p.Close()
	a, b := testenv.FreePort(t), testenv.FreePort(t)
	if err := p.Apply(map[string]Settings{a: {Name: "a", Handler: reply("one"), MaxConnections: 10}}); err != nil {
		t.Fatal(err)
	}
	ln := p.Get(a)
	if got := get(t, a); got != "one" {
		t.Fatalf("got %q, want one", got)
	}
	if err := p.Apply(map[string]Settings{a: {Name: "a", Handler: reply("two"), MaxConnections: 10}}); err != nil {
		t.Fatal(err)
	}
	if p.Get(a) != ln {
		t.Error("kept address got a new socket")
	}
	if got := get(t, a); got != "two" {
		t.Errorf("after swap: got %q, want two", got)
	}

	busy, _ := net.Listen("tcp", "127.0.0.1:0")
	defer busy.Close()
	err := p.Apply(map[string]Settings{
		a:                    {Name: "a", Handler: reply("three"), MaxConnections: 10},
		b:                    {Name: "b", Handler: reply("b"), MaxConnections: 10},
		busy.Addr().String(): {Name: "busy", Handler: reply("x"), MaxConnections: 10},
	})
	if err == nil || !strings.Contains(err.Error(), `listener "busy"`) {
		t.Fatalf("bind onto a busy port: got %v", err)
	}
	if got := get(t, a); got != "two" {
		t.Errorf("after a failed apply: got %q, want the old handler", got)
	}
	if p.Get(b) != nil || get(t, b) != "dial error" {
		t.Error("a listener bound during a failed apply was left open")
	}

	if err := p.Apply(map[string]Settings{b: {Name: "b", Handler: reply("b"), MaxConnections: 10}}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, a); got != "dial error" {
		t.Errorf("removed address still accepts: %q", got)
	}
	if got := get(t, b); got != "b" {
		t.Errorf("new address: got %q", got)
	}
}
