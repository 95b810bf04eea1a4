package tcpproxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/evloop"
)

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn)
	go func() { c, _ := ln.Accept(); ch <- c }()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// pump joins two proxy-side conns and returns a channel closed when the
// proxying has ended: Pipe, or an Engine.
type pump func(t *testing.T, pc, pu net.Conn, idle time.Duration, cnt Counters) <-chan struct{}

func pipePump(_ *testing.T, pc, pu net.Conn, idle time.Duration, cnt Counters) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		Pipe(pc, pu, idle, cnt)
		pc.Close()
		pu.Close()
		close(done)
	}()
	return done
}

func enginePump(t *testing.T, pc, pu net.Conn, idle time.Duration, cnt Counters) <-chan struct{} {
	g := evloop.NewGroup(1)
	t.Cleanup(g.Close)
	loops := g.Loops()
	if len(loops) == 0 {
		t.Skip("no event loops on this platform")
	}
	e := NewEngine(loops[0])
	t.Cleanup(e.Close)
	p, err := e.Add(pc, pu, idle, cnt)
	if err != nil {
		t.Fatal(err)
	}
	return p.Done()
}

var pumps = map[string]pump{"pipe": pipePump, "engine": enginePump}

// both runs a test once with each pump.
func both(t *testing.T, test func(t *testing.T, proxied func(idle time.Duration, cnt Counters) (app, backend net.Conn, done <-chan struct{}))) {
	for name, pf := range pumps {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, func(idle time.Duration, cnt Counters) (net.Conn, net.Conn, <-chan struct{}) {
				app, pc := pair(t)
				pu, backend := pair(t)
				return app, backend, pf(t, pc, pu, idle, cnt)
			})
		})
	}
}

func TestBytesIntactBothWays(t *testing.T) {
	both(t, func(t *testing.T, proxied func(time.Duration, Counters) (net.Conn, net.Conn, <-chan struct{})) {
		var up, down atomic.Int64
		app, backend, done := proxied(time.Minute, Counters{
			ToUpstream:   func(n int) { up.Add(int64(n)) },
			FromUpstream: func(n int) { down.Add(int64(n)) },
		})
		req := make([]byte, 4<<20)
		rand.Read(req)
		go func() {
			app.Write(req)
			app.(*net.TCPConn).CloseWrite()
		}()
		// the backend echoes everything, then closes its side
		got, err := io.ReadAll(backend)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, req) {
			t.Fatalf("backend got %d bytes, differing from the %d sent", len(got), len(req))
		}
		go func() { backend.Write(got); backend.(*net.TCPConn).CloseWrite() }()
		back, err := io.ReadAll(app)
		if err != nil || !bytes.Equal(back, req) {
			t.Fatalf("app got %d bytes back (err %v), want the %d sent", len(back), err, len(req))
		}
		<-done
		if up.Load() != int64(len(req)) || down.Load() != int64(len(req)) {
			t.Errorf("counted %d up, %d down; want %d each", up.Load(), down.Load(), len(req))
		}
	})
}

// TestHalfCloseKeepsOtherDirection is the classic bug: closing both sides on
// the first EOF loses the response to a request sent with shutdown(SHUT_WR).
func TestHalfCloseKeepsOtherDirection(t *testing.T) {
	both(t, func(t *testing.T, proxied func(time.Duration, Counters) (net.Conn, net.Conn, <-chan struct{})) {
		app, backend, _ := proxied(time.Minute, Counters{})
		app.Write([]byte("request"))
		app.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(backend) // ends at the passed-on FIN
		if string(got) != "request" {
			t.Fatalf("backend got %q", got)
		}
		time.Sleep(50 * time.Millisecond) // the response comes later
		backend.Write([]byte("response after the client's FIN"))
		backend.Close()
		back, err := io.ReadAll(app)
		if err != nil || string(back) != "response after the client's FIN" {
			t.Fatalf("app got %q, %v", back, err)
		}
	})
}

func TestIdleTimeoutClosesBoth(t *testing.T) {
	both(t, func(t *testing.T, proxied func(time.Duration, Counters) (net.Conn, net.Conn, <-chan struct{})) {
		app, backend, done := proxied(200*time.Millisecond, Counters{})
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatal("idle connection not closed")
		}
		app.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := app.Read(make([]byte, 1)); err == nil {
			t.Error("app side still open")
		}
		backend.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := backend.Read(make([]byte, 1)); err == nil {
			t.Error("backend side still open")
		}
	})
}

// TestOneWayTrafficIsNotIdle: a download keeps the connection alive although
// the app sends nothing.
func TestOneWayTrafficIsNotIdle(t *testing.T) {
	both(t, func(t *testing.T, proxied func(time.Duration, Counters) (net.Conn, net.Conn, <-chan struct{})) {
		// Ticks every 100ms under a 1s idle timeout: only one direction
		// moves, and the connection must still count as busy (the margin
		// is for a loaded machine, where a sleep can overshoot a lot).
		app, backend, done := proxied(time.Second, Counters{})
		go func() {
			for i := 0; i < 25; i++ {
				backend.Write([]byte("tick"))
				time.Sleep(100 * time.Millisecond)
			}
			backend.Close()
		}()
		got, _ := io.ReadAll(app)
		if len(got) != 100 {
			t.Errorf("got %d bytes of a 2.5s one-way stream, want 100 (closed as idle?)", len(got))
		}
		<-done
	})
}

func TestResetPassedOn(t *testing.T) {
	both(t, func(t *testing.T, proxied func(time.Duration, Counters) (net.Conn, net.Conn, <-chan struct{})) {
		app, backend, done := proxied(time.Minute, Counters{})
		app.Write([]byte("x"))
		backend.Read(make([]byte, 1))
		backend.(*net.TCPConn).SetLinger(0)
		backend.Close() // RST
		<-done
		app.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := app.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("app read after backend reset: got %v, want connection reset", err)
		}
	})
}

func BenchmarkPipeRoundTrip(b *testing.B) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	dial := func() (net.Conn, net.Conn) {
		a, _ := net.Dial("tcp", ln.Addr().String())
		return a, <-conns
	}
	app, pc := dial()
	pu, backend := dial()
	go Pipe(pc, pu, time.Minute, Counters{})
	go io.Copy(backend, backend)
	msg := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		app.Write(msg)
		io.ReadFull(app, msg)
	}
	app.Close()
	backend.Close()
}

// TestBackpressure: a backend that does not read makes the proxy stop
// reading from the app (bounded memory), and nothing is lost when it
// catches up.
func TestBackpressure(t *testing.T) {
	both(t, func(t *testing.T, proxied func(time.Duration, Counters) (net.Conn, net.Conn, <-chan struct{})) {
		app, backend, _ := proxied(time.Minute, Counters{})
		data := make([]byte, 16<<20)
		rand.Read(data)
		go func() {
			app.Write(data)
			app.(*net.TCPConn).CloseWrite()
		}()
		time.Sleep(300 * time.Millisecond)
		got, err := io.ReadAll(backend)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("backend got %d bytes (err %v), want the %d sent, intact", len(got), err, len(data))
		}
	})
}
