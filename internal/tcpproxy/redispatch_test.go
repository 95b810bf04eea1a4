package tcpproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	return testenv.Serve(t, nil, func(c net.Conn) { defer c.Close(); io.Copy(c, c) })
}

// TestRefusedConnectRedispatched: with one of two endpoints refusing (its
// listener closed, no health check or ejection to hide it), every new
// connection through the handler reaches the other one at once, on the
// goroutine pipe and on the engine.
func TestRefusedConnectRedispatched(t *testing.T) {
	for _, engines := range []bool{false, true} {
		name := map[bool]string{false: "pipe", true: "engine"}[engines]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			refused := ln.Addr().String()
			ln.Close()
			picker, err := balance.New("round_robin")
			if err != nil {
				t.Fatal(err)
			}
			cl := upstream.New(upstream.Options{Name: "c", Picker: picker, ConnectTimeout: time.Second})
			cl.SetEndpoints([]upstream.Target{{Addr: refused, Weight: 1}, {Addr: echoServer(t), Weight: 1}})
			h := &Handler{Cluster: cl, Log: slog.New(slog.DiscardHandler)}
			if engines {
				g := evloop.NewGroup(1)
				t.Cleanup(g.Close)
				if len(g.Loops()) == 0 {
					t.Skip("no engines on this platform")
				}
				h.Engines = NewEngines(g)
				t.Cleanup(h.Engines.Close)
			}
			front, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { front.Close() })
			go func() {
				for {
					c, err := front.Accept()
					if err != nil {
						return
					}
					go h.ServeConn(context.Background(), c)
				}
			}()
			for i := range 40 {
				c, err := net.Dial("tcp", front.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4)
				_, werr := c.Write([]byte("ping"))
				_, rerr := io.ReadFull(c, buf)
				c.Close()
				if werr != nil || rerr != nil || string(buf) != "ping" {
					t.Fatalf("connection %d: got %q (write %v, read %v), want the echo of ping", i, buf, werr, rerr)
				}
			}
		})
	}
}
