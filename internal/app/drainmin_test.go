package app

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/protocols"
)

// TestDrainMinimum: as a classic sidecar, attache gets SIGTERM together
// with its application; with no connection open it still accepts and
// proxies new ones for drain_min (default 5s), then exits.
func TestDrainMinimum(t *testing.T) {
	t.Parallel()
	backend, _ := echoServer(t, "b")
	cfg, err := config.Parse([]byte(yamlf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: l, address: "127.0.0.1:0", cluster: c}]
clusters: [{name: c, endpoints: ["%s"]}]
`, backend)), nil, protocols.Schemas())
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.DrainMin.D(); got != config.DefaultDrainMin {
		t.Fatalf("drain_min: got %v, want the default %v", got, config.DefaultDrainMin)
	}
	a, err := New(Options{Config: cfg, LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	addr := a.ListenerAddr("l")
	done := make(chan struct{})
	began := time.Now()
	go func() { a.Shutdown(context.Background()); close(done) }()
	eventually(t, 2*time.Second, "not ready", func() bool { ok, _ := a.Ready(); return !ok })

	time.Sleep(time.Second) // the application connects a second after SIGTERM
	select {
	case <-done:
		t.Fatalf("shutdown returned after %v with no connection open; want it to wait drain_min", time.Since(began))
	default:
	}
	if got, err := ask(addr, "late"); err != nil || got != "b:late" {
		t.Errorf("new connection 1s into the drain: got %q, %v; want b:late", got, err)
	}

	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("shutdown did not return after drain_min with no connection open")
	}
	if d := time.Since(began); d < config.DefaultDrainMin {
		t.Errorf("shutdown returned after %v, before drain_min (%v)", d, config.DefaultDrainMin)
	}
}

// TestDrainMinimumCutBySecondSignal: a second signal (ctx) ends the
// minimum at once.
func TestDrainMinimumCutBySecondSignal(t *testing.T) {
	t.Parallel()
	backend, _ := echoServer(t, "b")
	cfg, err := config.Parse([]byte(yamlf(`
admin: {address: "127.0.0.1:0"}
drain_min: 30s
drain_timeout: 60s
listeners: [{name: l, address: "127.0.0.1:0", cluster: c}]
clusters: [{name: c, endpoints: ["%s"]}]
`, backend)), nil, protocols.Schemas())
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Config: cfg, LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Shutdown(ctx); close(done) }()
	eventually(t, 2*time.Second, "not ready", func() bool { ok, _ := a.Ready(); return !ok })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not return after the second signal")
	}
}
