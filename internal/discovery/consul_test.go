package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/upstream"
)

// fakeConsul answers /v1/health/service/<name> like a Consul agent: the
// current entries with X-Consul-Index, a query with an index not below the
// current one blocking until a change or its wait ends. Tests against the
// real agent are in internal/app; this one is for the fast cases a real
// agent cannot be made to show (an index of 0, a failing answer).
type fakeConsul struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	index   uint64
	entries []map[string]any
	status  int // 0: 200
	changed chan struct{}
	reqs    []*http.Request
}

func newFakeConsul(t *testing.T) *fakeConsul {
	f := &fakeConsul{t: t, index: 5, changed: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeConsul) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeConsul) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	idx, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	if idx > 0 && idx >= f.index && f.status == 0 {
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	if f.status != 0 {
		http.Error(w, "rpc error: No cluster leader", f.status)
		return
	}
	w.Header().Set("X-Consul-Index", strconv.FormatUint(f.index, 10))
	json.NewEncoder(w).Encode(f.entries)
}

// set changes the state and wakes blocked queries.
func (f *fakeConsul) set(index uint64, status int, entries ...map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index, f.status, f.entries = index, status, entries
	close(f.changed)
	f.changed = make(chan struct{})
}

// request returns the i-th request received, waiting for it.
func (f *fakeConsul) request(i int) *http.Request {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		if len(f.reqs) > i {
			r := f.reqs[i]
			f.mu.Unlock()
			return r
		}
		f.mu.Unlock()
		if time.Now().After(deadline) {
			f.t.Fatalf("consul request %d never came", i)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// blocking returns the first request from the i-th on that carries an
// index, and its position. Reads without an index may come between: one
// follows whenever a query would go on a new connection, which the client's
// connection pool sometimes opens when queries follow each other closely.
func (f *fakeConsul) blocking(i int) (*http.Request, int) {
	f.t.Helper()
	for ; ; i++ {
		if r := f.request(i); r.URL.Query().Has("index") {
			return r, i
		}
	}
}

func entry(nodeAddr, svcAddr string, port, weight int) map[string]any {
	return map[string]any{
		"Node":    map[string]any{"Node": "n-" + nodeAddr, "Address": nodeAddr, "Datacenter": "dc1"},
		"Service": map[string]any{"ID": fmt.Sprintf("s-%s-%d", svcAddr, port), "Service": "orders", "Address": svcAddr, "Port": port, "Weights": map[string]any{"Passing": weight, "Warning": 1}},
		"Checks":  []any{},
	}
}

// run starts c and returns its updates and reports.
func run(t *testing.T, c *Consul) (updates chan []upstream.Target, reports chan error) {
	t.Helper()
	updates, reports = make(chan []upstream.Target, 100), make(chan error, 100)
	c.Log = slog.New(slog.DiscardHandler)
	c.Report = func(err error) {
		select {
		case reports <- err:
		default: // a test that stopped reading
		}
	}
	c.BackoffBase, c.BackoffMax = 5*time.Millisecond, 20*time.Millisecond
	if c.MinInterval == 0 {
		c.MinInterval = time.Millisecond
	}
	if c.Wait == 0 {
		c.Wait = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx, func(ts []upstream.Target) { updates <- ts }); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return updates, reports
}

func next[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s", what)
		panic("unreachable")
	}
}

func TestConsulQueryAndFollow(t *testing.T) {
	t.Parallel()
	f := newFakeConsul(t)
	f.set(7, 0, entry("10.0.0.9", "10.0.0.1", 8080, 3), entry("10.0.0.2", "", 8080, 0))
	updates, _ := run(t, &Consul{Address: f.addr(), Service: "orders", Tag: "v2", Datacenter: "dc1", Token: "secret-token"})

	got := next(t, updates, "first endpoint set")
	want := []upstream.Target{{Addr: "10.0.0.1:8080", Weight: 3}, {Addr: "10.0.0.2:8080", Weight: 1}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v (the service address, else the node's; weight from Weights.Passing)", got, want)
	}
	r := f.request(0)
	q := r.URL.Query()
	if r.URL.Path != "/v1/health/service/orders" || !q.Has("passing") || q.Get("tag") != "v2" || q.Get("dc") != "dc1" || q.Has("index") {
		t.Errorf("first query: got %s, want /v1/health/service/orders?passing&tag=v2&dc=dc1 without index", r.URL)
	}
	if h := r.Header.Get("X-Consul-Token"); h != "secret-token" {
		t.Errorf("X-Consul-Token: got %q, want the token", h)
	}

	// The second query blocks on the index of the first answer; a change
	// wakes it.
	r, i := f.blocking(1)
	if q := r.URL.Query(); q.Get("index") != "7" || q.Get("wait") != "10000ms" {
		t.Fatalf("blocking query: got %s, want index=7&wait=10000ms", r.URL)
	}
	f.set(8, 0, entry("10.0.0.9", "10.0.0.1", 8080, 3))
	if got := next(t, updates, "update after the change"); !slices.Equal(got, want[:1]) {
		t.Fatalf("after the change: got %v, want %v", got, want[:1])
	}
	if r, _ := f.blocking(i + 1); r.URL.Query().Get("index") != "8" {
		t.Errorf("next blocking query: got %s, want index=8", r.URL)
	}
}

func TestConsulIndexBackwardsAndZero(t *testing.T) {
	t.Parallel()
	f := newFakeConsul(t)
	f.set(40, 0, entry("10.0.0.1", "", 1, 1))
	updates, _ := run(t, &Consul{Address: f.addr(), Service: "orders"})
	next(t, updates, "first set")
	_, i := f.blocking(1) // blocked with index=40
	// The index goes backwards, as after a snapshot restore: the answer is
	// used, and the next query starts over without an index.
	f.set(3, 0, entry("10.0.0.2", "", 1, 1))
	if got := next(t, updates, "set after the reset"); got[0].Addr != "10.0.0.2:1" {
		t.Fatalf("got %v, want 10.0.0.2:1", got)
	}
	if r := f.request(i + 1); r.URL.Query().Has("index") {
		t.Fatalf("query after the index went backwards: got %s, want no index", r.URL)
	}
	r, i := f.blocking(i + 1)
	if r.URL.Query().Get("index") != "3" {
		t.Fatalf("query after the fresh read: got %s, want index=3", r.URL)
	}
	// An index of 0 is a Consul bug that would make every query return at
	// once; it is taken as 1.
	f.set(0, 0, entry("10.0.0.3", "", 1, 1))
	next(t, updates, "set with index 0")
	if r, _ := f.blocking(i + 1); r.URL.Query().Get("index") != "1" {
		t.Fatalf("query after an index of 0: got %s, want index=1", r.URL)
	}
}

func TestConsulKeepsLastEndpointsWhileFailing(t *testing.T) {
	t.Parallel()
	f := newFakeConsul(t)
	f.set(9, 0, entry("10.0.0.1", "", 80, 1))
	updates, reports := run(t, &Consul{Address: f.addr(), Service: "orders"})
	next(t, updates, "first set")
	if err := next(t, reports, "report"); err != nil {
		t.Fatalf("first report: got %v, want nil", err)
	}
	f.blocking(1)
	f.set(9, http.StatusInternalServerError)
	err := next(t, reports, "failure report")
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "No cluster leader") {
		t.Fatalf("report: got %v, want the status and Consul's message", err)
	}
	select {
	case ts := <-updates:
		t.Fatalf("update %v while Consul fails; the last set must stay", ts)
	case <-time.After(100 * time.Millisecond):
	}
	// Consul answers again: the first query after errors starts over
	// without an index (the agent may have restarted with a lower one).
	f.mu.Lock()
	n := len(f.reqs)
	f.mu.Unlock()
	f.set(10, 0, entry("10.0.0.1", "", 80, 1), entry("10.0.0.2", "", 80, 1))
	if got := next(t, updates, "set after recovery"); len(got) != 2 {
		t.Fatalf("after recovery: got %v, want two endpoints", got)
	}
	for i := n; ; i++ {
		r := f.request(i)
		if r.URL.Query().Get("index") == "10" {
			break
		}
		if r.URL.Query().Has("index") {
			t.Fatalf("query %d after failures: got %s, want no index until a fresh read", i, r.URL)
		}
	}
}

// TestConsulConnectionClosePerAnswer: behind a proxy that closes every
// connection, every query is on a new connection; the queries still block.
func TestConsulConnectionClosePerAnswer(t *testing.T) {
	t.Parallel()
	f := newFakeConsul(t)
	f.srv.Config.SetKeepAlivesEnabled(false)
	f.set(7, 0, entry("10.0.0.1", "", 80, 1))
	updates, _ := run(t, &Consul{Address: f.addr(), Service: "orders"})
	next(t, updates, "first set")
	for i := 1; ; i++ {
		if f.request(i).URL.Query().Get("index") == "7" {
			break
		}
		if i > 3 {
			t.Fatalf("no blocking query after %d queries on closing connections", i)
		}
	}
}

func TestConsulAnswerErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"acl denied", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "ACL not found", http.StatusForbidden) }, "consul answered 403 Forbidden: ACL not found"},
		{"no index", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("[]")) }, "no valid X-Consul-Index"},
		{"not json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Consul-Index", "3")
			w.Write([]byte("<html>"))
		}, "decode consul answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			u, _ := url.Parse(srv.URL)
			c := &Consul{Address: u.Host, Service: "orders"}
			var fresh bool
			_, _, err := c.query(context.Background(), srv.Client(), 0, time.Second, &fresh)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	base, ceiling := 500*time.Millisecond, 30*time.Second
	for n, want := range map[int]time.Duration{1: base, 2: 2 * base, 3: 4 * base, 7: ceiling, 40: ceiling} {
		for range 50 {
			if d := backoff(n, base, ceiling); d < want/2 || d > want {
				t.Fatalf("backoff(%d): got %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}
