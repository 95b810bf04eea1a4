package upstream

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
)

func TestHealthStateMachine(t *testing.T) {
	th := Thresholds{Healthy: 2, Unhealthy: 3}
	for _, tc := range []struct {
		name    string
		results []bool
		want    Health
	}{
		{"first pass decides", []bool{true}, Healthy},
		{"first fail decides", []bool{false}, Unhealthy},
		{"two fails stay healthy", []bool{true, false, false}, Healthy},
		{"three fails turn unhealthy", []bool{true, false, false, false}, Unhealthy},
		{"interrupted fails reset", []bool{true, false, false, true, false, false}, Healthy},
		{"one pass stays unhealthy", []bool{false, true}, Unhealthy},
		{"two passes recover", []bool{false, true, true}, Healthy},
		{"interrupted passes reset", []bool{false, true, false, true}, Unhealthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEndpoint("a:1", 1)
			for _, ok := range tc.results {
				e.ObserveCheck(ok, th)
			}
			if got := e.Health(); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

type closer struct{ closed atomic.Bool }

func (c *closer) Close() error { c.closed.Store(true); return nil }

func TestUnhealthyClosesTrackedConns(t *testing.T) {
	e := NewEndpoint("a:1", 1)
	th := Thresholds{Healthy: 1, Unhealthy: 1}
	e.ObserveCheck(true, th)
	kept, gone := &closer{}, &closer{}
	e.Track(kept)
	untrack := e.Track(gone)
	untrack()
	untrack() // a second call must not count twice
	if got := e.Active(); got != 1 {
		t.Fatalf("active: got %d, want 1", got)
	}
	e.ObserveCheck(false, th)
	if !kept.closed.Load() {
		t.Error("tracked connection not closed when endpoint turned unhealthy")
	}
	if gone.closed.Load() {
		t.Error("untracked connection closed")
	}
}

// listen returns the address of a listener that accepts and holds
// connections until the test ends, and one that refuses (closed port).
func listen(t *testing.T) (up, down string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	down = dead.Addr().String()
	dead.Close()
	return ln.Addr().String(), down
}

func newCluster(t *testing.T, policy string, od OutlierPolicy, now func() time.Time) *Cluster {
	p, err := balance.New(policy)
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Name: "c", Picker: p, ConnectTimeout: time.Second, Outlier: od, Now: now})
}

func TestDialRetriesNextEndpoint(t *testing.T) {
	up, down := listen(t)
	c := newCluster(t, "first", OutlierPolicy{}, nil)
	c.SetEndpoints([]Target{{Addr: down}, {Addr: up}})
	conn, ep, err := c.Dial(context.Background(), 0)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	if got := ep.Active(); got != 0 {
		t.Errorf("active before Track: got %d, want 0", got)
	}
	defer ep.Track(conn)()
	if ep.Addr != up {
		t.Errorf("got endpoint %s, want %s", ep.Addr, up)
	}
	if got := ep.Active(); got != 1 {
		t.Errorf("active after Track: got %d, want 1", got)
	}
}

func TestDialAllFail(t *testing.T) {
	_, down := listen(t)
	c := newCluster(t, "round_robin", OutlierPolicy{}, nil)
	if _, _, err := c.Dial(context.Background(), 0); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("empty cluster: got %v, want ErrNoEndpoints", err)
	}
	c.SetEndpoints([]Target{{Addr: down}})
	if _, _, err := c.Dial(context.Background(), 0); err == nil {
		t.Error("got nil error dialing a closed port")
	}
}

func TestOutlierEjectionAndBackoff(t *testing.T) {
	up, down := listen(t)
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	od := OutlierPolicy{ConsecutiveFailures: 2, BaseEjectionTime: 10 * time.Second, MaxEjectionPercent: 50}
	c := newCluster(t, "first", od, clock)
	var ejected atomic.Int32
	c.opts.Observer.Ejected = func(*Endpoint) { ejected.Add(1) }
	c.SetEndpoints([]Target{{Addr: down}, {Addr: up}})
	dead := c.Endpoints()[0]
	for i := 0; i < 2; i++ {
		conn, _, err := c.Dial(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	if !dead.Ejected(now) || ejected.Load() != 1 {
		t.Fatalf("dead endpoint not ejected after 2 failures (ejections seen %d)", ejected.Load())
	}
	if c.Routable(dead, now) {
		t.Error("ejected endpoint is routable")
	}
	now = now.Add(11 * time.Second)
	if dead.Ejected(now) {
		t.Error("still ejected after base_ejection_time")
	}
	// a second ejection in a row lasts twice as long
	for i := 0; i < 2; i++ {
		conn, _, _ := c.Dial(context.Background(), 0)
		conn.Close()
	}
	if !dead.Ejected(now.Add(19 * time.Second)) {
		t.Error("second ejection did not back off to 2x base_ejection_time")
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	_, down1 := listen(t)
	_, down2 := listen(t)
	od := OutlierPolicy{ConsecutiveFailures: 1, BaseEjectionTime: time.Minute, MaxEjectionPercent: 50}
	c := newCluster(t, "round_robin", od, nil)
	c.SetEndpoints([]Target{{Addr: down1}, {Addr: down2}})
	c.Dial(context.Background(), 0)
	c.Dial(context.Background(), 0)
	n := 0
	for _, e := range c.Endpoints() {
		if e.Ejected(time.Now()) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("ejected %d of 2 endpoints, want 1 (max_ejection_percent 50)", n)
	}
}

func TestSetEndpointsKeepsState(t *testing.T) {
	c := newCluster(t, "round_robin", OutlierPolicy{}, nil)
	c.SetEndpoints([]Target{{Addr: "a:1"}, {Addr: "b:1"}})
	a := c.Endpoints()[0]
	a.ObserveCheck(false, Thresholds{1, 1})
	c.SetEndpoints([]Target{{Addr: "c:1"}, {Addr: "a:1"}})
	if got := c.Endpoints()[1]; got != a {
		t.Error("endpoint a:1 was replaced although unchanged")
	}
	c.SetEndpoints([]Target{{Addr: "a:1", Weight: 3}})
	if got := c.Endpoints()[0]; got.Health() != Unhealthy || got.Weight != 3 {
		t.Errorf("weight change: got health %v weight %d, want unhealthy and 3", got.Health(), got.Weight)
	}

	next := newCluster(t, "first", OutlierPolicy{}, nil)
	next.Inherit(c)
	if got := next.Endpoints(); len(got) != 1 || got[0] != c.Endpoints()[0] {
		t.Errorf("reloaded cluster before discovery reported: got %v, want the old endpoints", got)
	}
	next.SetEndpoints([]Target{{Addr: "a:1", Weight: 3}})
	if next.Endpoints()[0] != c.Endpoints()[0] {
		t.Error("reloaded cluster did not inherit the endpoint")
	}
}

func TestPanicModeWhenNoneRoutable(t *testing.T) {
	up, _ := listen(t)
	p, _ := balance.New("round_robin")
	c := New(Options{Name: "c", Picker: p, ConnectTimeout: time.Second, HasHealthCheck: true})
	c.SetEndpoints([]Target{{Addr: up}})
	// health unknown: not routable, but the only chance
	conn, _, err := c.Dial(context.Background(), 0)
	if err != nil {
		t.Fatalf("panic mode: %v", err)
	}
	conn.Close()
}

type closeCounter struct{ closed atomic.Int32 }

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

// TestRemovedEndpointDrains: an endpoint that discovery removes (a
// terminating pod) gets no new connection, and the ones open to it are left
// to finish, not closed.
func TestRemovedEndpointDrains(t *testing.T) {
	c := newCluster(t, "round_robin", OutlierPolicy{}, nil)
	c.SetEndpoints([]Target{{Addr: "a:1"}, {Addr: "b:1"}})
	a := c.Endpoints()[0]
	conn := &closeCounter{}
	untrack := a.Track(conn)
	defer untrack()
	c.SetEndpoints([]Target{{Addr: "b:1"}})
	for range 10 {
		if e := c.Pick(0, nil); e == nil || e.Addr != "b:1" {
			t.Fatalf("pick after a:1 was removed: got %v, want b:1", e)
		}
	}
	if n := conn.closed.Load(); n != 0 || a.Active() != 1 {
		t.Fatalf("connection to the removed endpoint: closed %d times, active %d; want open, 1", n, a.Active())
	}
}

// TestPick: each policy choice among several endpoints without a list
// allocated per pick; a lone endpoint is chosen even when not routable
// (panic mode, as with several), unless skipped.
func TestPick(t *testing.T) {
	c := newCluster(t, "round_robin", OutlierPolicy{}, nil)
	c.SetEndpoints([]Target{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "c:1"}})
	seen := map[string]bool{}
	for range 3 {
		seen[c.Pick(0, nil).Addr] = true
	}
	if len(seen) != 3 {
		t.Errorf("round robin over 3 endpoints picked %v", seen)
	}
	if ep := c.Pick(0, func(e *Endpoint) bool { return e.Addr != "b:1" }); ep == nil || ep.Addr != "b:1" {
		t.Errorf("all but b:1 skipped: got %v", ep)
	}
	if ep := c.Pick(0, func(*Endpoint) bool { return true }); ep != nil {
		t.Errorf("all skipped: got %s, want none", ep.Addr)
	}
	// Under the race detector sync.Pool drops some lists; an allocation
	// per pick would still show as 1.
	if allocs := testing.AllocsPerRun(1000, func() { c.Pick(0, nil) }); allocs >= 0.5 {
		t.Errorf("%.2f allocations per pick, want none", allocs)
	}

	one := New(Options{Name: "one", HasHealthCheck: true})
	one.SetEndpoints([]Target{{Addr: "a:1"}}) // never checked: not routable
	if ep := one.Pick(0, nil); ep == nil || ep.Addr != "a:1" {
		t.Errorf("lone unroutable endpoint: got %v, want a:1", ep)
	}
	if ep := one.Pick(0, func(*Endpoint) bool { return true }); ep != nil {
		t.Errorf("lone endpoint skipped: got %s, want none", ep.Addr)
	}
}

// TestPickAfterRoutableTried: once every healthy endpoint was tried, Pick
// gives none rather than an unhealthy one (panic mode is for a cluster with
// nothing routable, not for a retry that has run out of healthy endpoints).
func TestPickAfterRoutableTried(t *testing.T) {
	p, _ := balance.New("round_robin")
	c := New(Options{Name: "c", Picker: p, HasHealthCheck: true})
	c.SetEndpoints([]Target{{Addr: "a:1"}, {Addr: "b:1"}})
	th := Thresholds{Healthy: 1, Unhealthy: 1}
	a, b := c.Endpoints()[0], c.Endpoints()[1]
	a.ObserveCheck(true, th)
	b.ObserveCheck(false, th)
	skipA := func(e *Endpoint) bool { return e == a }
	for range 4 {
		if ep := c.Pick(0, skipA); ep != nil {
			t.Fatalf("healthy a:1 tried, b:1 unhealthy: picked %s, want none", ep.Addr)
		}
	}
	b.ObserveCheck(true, th)
	if ep := c.Pick(0, skipA); ep != b {
		t.Fatalf("b:1 healthy again: picked %v, want b:1", ep)
	}
	a.ObserveCheck(false, th)
	b.ObserveCheck(false, th)
	if ep := c.Pick(0, skipA); ep != b { // nothing routable: panic mode, skip still applies
		t.Fatalf("none routable, a:1 tried: picked %v, want b:1", ep)
	}
}

// TestDialFallsBackWhenRoutableFail: when every routable endpoint refuses
// (one that has just gone away, health checks not yet aware), Dial tries
// the others before failing, as in panic mode.
func TestDialFallsBackWhenRoutableFail(t *testing.T) {
	cases := []struct {
		name  string
		other func(e *Endpoint, now time.Time) // makes the live endpoint unroutable
	}{
		{"unhealthy", func(e *Endpoint, _ time.Time) { e.ObserveCheck(false, Thresholds{Healthy: 1, Unhealthy: 1}) }},
		{"ejected", func(e *Endpoint, now time.Time) {
			e.connectResult(false, now, OutlierPolicy{ConsecutiveFailures: 1, BaseEjectionTime: time.Minute}, true)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up, down := listen(t)
			p, _ := balance.New("first")
			c := New(Options{Name: "c", Picker: p, ConnectTimeout: time.Second, HasHealthCheck: true})
			c.SetEndpoints([]Target{{Addr: down}, {Addr: up}})
			eps := c.Endpoints()
			eps[0].ObserveCheck(true, Thresholds{Healthy: 1, Unhealthy: 1})
			eps[1].ObserveCheck(true, Thresholds{Healthy: 1, Unhealthy: 1})
			tc.other(eps[1], time.Now())
			if c.Routable(eps[1], time.Now()) {
				t.Fatalf("the live endpoint is routable; the test needs it not to be")
			}
			conn, ep, err := c.Dial(context.Background(), 0)
			if err != nil {
				t.Fatalf("Dial: got %v, want a connection to %s", err, up)
			}
			conn.Close()
			if ep.Addr != up {
				t.Errorf("endpoint: got %s, want %s", ep.Addr, up)
			}
		})
	}
}
