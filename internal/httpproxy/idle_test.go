package httpproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/upstream"
)

// TestIdleBudgetShared: max_idle_per_endpoint bounds the idle connections
// to an endpoint over every wire path and listener together. Three
// listeners of one cluster (engine, goroutine fast path, net/http) each
// send many requests at once, which open a connection each, then all go
// idle: the backend keeps at most max_idle_per_endpoint open. (Each path
// kept its own pool, and the engine one per loop: up to three times as
// many.)
func TestIdleBudgetShared(t *testing.T) {
	const maxIdle, perPath = 4, 12
	var open atomic.Int64
	var mu sync.Mutex
	inFlight, release := 0, make(chan struct{})
	backend := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Hold every request until perPath are in, so that each
			// takes a connection of its own.
			mu.Lock()
			if inFlight++; inFlight == perPath {
				close(release)
			}
			ch := release
			mu.Unlock()
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
			}
			w.Write([]byte("ok"))
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	t.Cleanup(func() { backend.Close() })

	picker, _ := balance.New("first")
	up := upstream.New(upstream.Options{Name: "c", Picker: picker, ConnectTimeout: time.Second})
	up.SetEndpoints([]upstream.Target{{Addr: ln.Addr().String(), Weight: 1}})
	c := NewCluster(ClusterParams{Upstream: up, Version: "auto", MaxIdle: maxIdle, IdleTimeout: time.Minute, ConnectTimeout: time.Second})
	t.Cleanup(c.Close)
	route := Route{Name: "l/0", Match: RouteMatch{Prefix: "/"}, To: []RouteTarget{{Cluster: "c", Weight: 1}},
		Timeout: config.Duration(20 * time.Second)}
	log := slog.New(slog.DiscardHandler)
	table := NewTable(listenerOf("l", route), func(string) *Cluster { return c })

	for _, path := range []wirePath{onEngine, onGoroutine, onNetHTTP} {
		s := newTestServer(t, time.Minute, path, log)
		s.Update(NewHandler(HandlerOptions{Table: table, Log: log}))
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				conn, err := pl.Accept()
				if err != nil {
					return
				}
				go s.ServeConn(context.Background(), conn)
			}
		}()
		t.Cleanup(func() { pl.Close(); s.Close(time.Second) })

		mu.Lock()
		inFlight, release = 0, make(chan struct{})
		mu.Unlock()
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: perPath}}
		var wg sync.WaitGroup
		errs := make(chan error, perPath)
		for i := range perPath {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := client.Get(fmt.Sprintf("http://%s/r%d", pl.Addr(), i))
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%s: %v", path, err)
		}
		client.CloseIdleConnections()
	}
	// What a path could not keep is closed at once; the backend sees the
	// closes soon after.
	deadline := time.Now().Add(5 * time.Second)
	for open.Load() > maxIdle && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := open.Load(); n > maxIdle {
		t.Errorf("idle upstream connections: got %d, want at most max_idle_per_endpoint %d", n, maxIdle)
	}
	if n := c.budget(up.Endpoints()[0]).n.Load(); n < 0 || n > maxIdle {
		t.Errorf("idle budget count: got %d, want 0 to %d", n, maxIdle)
	}
}
