package failover

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

var th = upstream.Thresholds{Healthy: 1, Unhealthy: 2}

// cluster returns a cluster of endpoints a and b.
func cluster(t *testing.T) (*upstream.Cluster, *upstream.Endpoint, *upstream.Endpoint) {
	t.Helper()
	p, _ := balance.New("round_robin")
	c := upstream.New(upstream.Options{Name: "orders", Picker: p, HasHealthCheck: true})
	c.SetEndpoints([]upstream.Target{{Addr: "a:5432"}, {Addr: "b:5432"}})
	eps := c.Endpoints()
	return c, eps[0], eps[1]
}

func check(e *upstream.Endpoint, r *upstream.Replication) {
	if r != nil {
		e.ObserveReplication(*r)
	}
	e.ObserveCheck(r != nil, th)
}

var (
	primary = &upstream.Replication{Role: upstream.RolePrimary}
	standby = &upstream.Replication{Role: upstream.RoleStandby, LagKnown: true}
)

// TestWatcherEvents: the first primary learned is no failover; the
// primary dying and the standby promoted is one event (old, new); a split
// brain decides nothing; the same primary again is nothing.
func TestWatcherEvents(t *testing.T) {
	t.Parallel()
	c, a, b := cluster(t)
	w := NewWatcher(c, &Hook{}, nil)
	events := func() []Event {
		var out []Event
		for {
			select {
			case ev := <-w.events:
				out = append(out, ev)
			default:
				return out
			}
		}
	}
	check(a, primary)
	check(b, standby)
	w.Observe()
	if got := events(); len(got) != 0 {
		t.Fatalf("first primary learned: got %+v, want no event", got)
	}
	check(a, nil) // the primary dies
	w.Observe()
	check(b, primary) // b promoted
	w.Observe()
	got := events()
	if len(got) != 1 || got[0].OldPrimary != "a:5432" || got[0].NewPrimary != "b:5432" || got[0].Cluster != "orders" {
		t.Fatalf("failover: got %+v, want one event a:5432 -> b:5432", got)
	}
	check(a, primary) // a back, not rewound: split brain
	w.Observe()
	check(a, standby)
	w.Observe()
	if got := events(); len(got) != 0 {
		t.Errorf("split brain then the same primary: got %+v, want no event", got)
	}
}

// TestCommandHook: the command gets the event in its environment and its
// output is returned; one that outlives the timeout is killed, its child
// with it.
func TestCommandHook(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "hook.sh")
	out := filepath.Join(dir, "env.txt")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$ATTACHE_CLUSTER $ATTACHE_OLD_PRIMARY $ATTACHE_NEW_PRIMARY $1\" > "+out+"\necho told\n"), 0o755)
	h := &Hook{Command: []string{script, "arg1"}, Timeout: 10 * time.Second}
	ev := Event{Cluster: "orders", OldPrimary: "a:5432", NewPrimary: "b:5432", Time: time.Now()}
	output, err := h.Run(context.Background(), ev)
	if err != nil || strings.TrimSpace(output) != "told" {
		t.Fatalf("got %q, %v; want told, nil", output, err)
	}
	b, _ := os.ReadFile(out)
	if got, want := strings.TrimSpace(string(b)), "orders a:5432 b:5432 arg1"; got != want {
		t.Errorf("environment and argv: got %q, want %q", got, want)
	}

	slow := filepath.Join(dir, "slow.sh")
	os.WriteFile(slow, []byte("#!/bin/sh\nsleep 30 &\nsleep 30\n"), 0o755)
	h = &Hook{Command: []string{slow}, Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, err = h.Run(context.Background(), ev)
	if err == nil || !strings.Contains(err.Error(), "killed after timeout 300ms") {
		t.Errorf("slow command: got %v, want killed after timeout", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("slow command returned after %v: its child kept it waiting", d)
	}

	h = &Hook{Command: []string{"/bin/false"}, Timeout: 5 * time.Second}
	if _, err := h.Run(context.Background(), ev); err == nil || !strings.Contains(err.Error(), `command "/bin/false": exit status 1`) {
		t.Errorf("failing command: got %v", err)
	}
}

// TestWebhookHook: the event is POSTed as JSON; a non-2xx answer is an
// error.
func TestWebhookHook(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []Event
	status := http.StatusNoContent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev Event
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &ev) != nil {
			t.Errorf("got %s %q %s", r.Method, r.Header.Get("Content-Type"), b)
		}
		mu.Lock()
		got = append(got, ev)
		st := status
		mu.Unlock()
		w.WriteHeader(st)
	}))
	defer srv.Close()
	h := &Hook{Webhook: srv.URL + "/failover", Timeout: 5 * time.Second}
	ev := Event{Cluster: "orders", OldPrimary: "a:5432", NewPrimary: "b:5432", Time: time.Now()}
	if _, err := h.Run(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(got) != 1 || got[0].NewPrimary != "b:5432" || got[0].OldPrimary != "a:5432" || got[0].Cluster != "orders" {
		t.Errorf("webhook body: got %+v", got)
	}
	status = http.StatusInternalServerError
	mu.Unlock()
	if _, err := h.Run(context.Background(), ev); err == nil || !strings.Contains(err.Error(), "status 500") {
		t.Errorf("webhook answering 500: got %v, want an error", err)
	}
}

// TestWatcherRunsHook: Observe queues, Run runs the hook and logs its
// outcome.
func TestWatcherRunsHook(t *testing.T) {
	t.Parallel()
	c, a, b := cluster(t)
	hit := make(chan Event, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev Event
		json.NewDecoder(r.Body).Decode(&ev)
		hit <- ev
	}))
	defer srv.Close()
	var logs testenv.LogBuffer
	w := NewWatcher(c, &Hook{Webhook: srv.URL, Timeout: 5 * time.Second}, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	check(a, primary)
	check(b, standby)
	w.Observe()
	check(a, nil)
	check(b, primary)
	w.Observe()
	select {
	case ev := <-hit:
		if ev.NewPrimary != "b:5432" {
			t.Errorf("got %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("webhook not called")
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "on_failover done"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no outcome logged:\n%s", logs.String())
		}
	}
}

// TestWatcherInherit: a watcher rebuilt by a reload knows the primary the
// old one saw, so a failover across the reload is still one.
func TestWatcherInherit(t *testing.T) {
	t.Parallel()
	c, a, b := cluster(t)
	old := NewWatcher(c, &Hook{}, nil)
	check(a, primary)
	check(b, standby)
	old.Observe()
	check(a, nil)
	check(b, primary)
	w := NewWatcher(c, &Hook{}, nil)
	w.Inherit(old)
	w.Observe()
	select {
	case ev := <-w.events:
		if ev.OldPrimary != "a:5432" || ev.NewPrimary != "b:5432" {
			t.Errorf("got %+v", ev)
		}
	default:
		t.Error("failover across a reload: no event")
	}
}
