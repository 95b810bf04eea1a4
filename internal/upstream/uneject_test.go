package upstream

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestPassingCheckEndsEjection: a health-check pass that leaves the endpoint
// healthy ends its outlier ejection at once and resets the consecutive
// failure counts (Envoy's successful_active_health_check_uneject_host); a
// pass that leaves it unhealthy, or a failed check, does not.
func TestPassingCheckEndsEjection(t *testing.T) {
	th := Thresholds{Healthy: 2, Unhealthy: 2}
	od := OutlierPolicy{ConsecutiveFailures: 2, Consecutive5xx: 2, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100}
	for _, tc := range []struct {
		name        string
		before      []bool // checks before the ejection
		after       []bool // checks after it
		wantEjected bool
	}{
		{"pass while healthy", []bool{true}, []bool{true}, false},
		{"turn to healthy", []bool{false}, []bool{true, true}, false},
		{"pass below healthy threshold", []bool{false}, []bool{true}, true},
		{"failed check", []bool{true}, []bool{false}, true},
		{"no check", []bool{true}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			e := NewEndpoint("a:1", 1)
			for _, ok := range tc.before {
				e.ObserveCheck(ok, th)
			}
			for range od.ConsecutiveFailures {
				e.connectResult(false, now, od, true)
			}
			if !e.Ejected(now) {
				t.Fatal("not ejected after consecutive connect failures; the test needs it to be")
			}
			now = now.Add(time.Second) // well inside base_ejection_time
			for _, ok := range tc.after {
				e.ObserveCheck(ok, th)
			}
			if got := e.Ejected(now); got != tc.wantEjected {
				t.Fatalf("ejected after checks %v: got %v, want %v", tc.after, got, tc.wantEjected)
			}
			if tc.wantEjected {
				return
			}
			// The counts restarted: one failure of each kind short of
			// the limit does not eject.
			e.connectResult(false, now, od, true)
			e.responseResult(false, now, od, true)
			if e.Ejected(now) {
				t.Error("ejected again by one failure after the ejection ended: got ejected, want counts reset")
			}
		})
	}
}

// TestPassingCheckResetsCounts: failures counted before a
// turn to healthy are forgotten, as on a passing check while ejected.
func TestPassingCheckResetsCounts(t *testing.T) {
	th := Thresholds{Healthy: 1, Unhealthy: 1}
	od := OutlierPolicy{ConsecutiveFailures: 2, Consecutive5xx: 2, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100}
	now := time.Unix(1000, 0)
	e := NewEndpoint("a:1", 1)
	e.ObserveCheck(false, th)
	e.connectResult(false, now, od, true)
	e.responseResult(false, now, od, true)
	e.ObserveCheck(true, th) // unhealthy -> healthy
	e.connectResult(false, now, od, true)
	e.responseResult(false, now, od, true)
	if e.Ejected(now) {
		t.Error("ejected by one failure after a turn to healthy: got ejected, want counts reset")
	}
}

// TestUnejectedEndpointTakesOverFromDead is the soak's sequence at the
// cluster: b was ejected (stopped) and came back, its check passes; then a
// dies. b must be routable at once, so that picks avoid a without panic
// mode, and the slot under max_ejection_percent is free for a.
func TestUnejectedEndpointTakesOverFromDead(t *testing.T) {
	th := Thresholds{Healthy: 1, Unhealthy: 1}
	now := time.Unix(1000, 0)
	od := OutlierPolicy{ConsecutiveFailures: 1, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 50}
	c := newCluster(t, "round_robin", od, func() time.Time { return now })
	c.opts.HasHealthCheck = true
	c.SetEndpoints([]Target{{Addr: "a:1"}, {Addr: "b:1"}})
	a, b := c.Endpoints()[0], c.Endpoints()[1]
	a.ObserveCheck(true, th)
	b.ObserveCheck(true, th)
	refused := errors.New("connection refused")

	c.RecordConnect(b, refused) // b stopped
	if !b.Ejected(now) {
		t.Fatal("b not ejected; the test needs it to be")
	}
	now = now.Add(2 * time.Second)
	b.ObserveCheck(true, th) // b is back
	if !c.Routable(b, now) {
		t.Fatal("b after a passing check: got not routable, want routable")
	}

	now = now.Add(2 * time.Second)
	c.RecordConnect(a, refused) // a killed
	if !a.Ejected(now) {
		t.Error("a after its connect failure: got not ejected, want ejected (b's ejection ended, max_ejection_percent allows one)")
	}
	a.ObserveCheck(false, th)
	for i := range 10 {
		if e := c.Pick(0, nil); e != b {
			t.Fatalf("pick %d with a dead and b back: got %s, want b:1", i, e.Addr)
		}
	}
}

// TestUnhealthyRefusingNotTried: an endpoint that checks mark unhealthy and
// that refuses connections is neither picked nor dialled while another is
// healthy.
func TestUnhealthyRefusingNotTried(t *testing.T) {
	up, down := listen(t)
	th := Thresholds{Healthy: 1, Unhealthy: 1}
	for _, policy := range []string{"round_robin", "weighted", "least_request", "random", "p2c", "ring_hash", "first"} {
		t.Run(policy, func(t *testing.T) {
			c := newCluster(t, policy, OutlierPolicy{ConsecutiveFailures: 5, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 50}, nil)
			c.opts.HasHealthCheck = true
			dials := map[string]int{}
			d := &net.Dialer{}
			c.opts.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials[addr]++
				return d.DialContext(ctx, network, addr)
			}
			c.SetEndpoints([]Target{{Addr: down}, {Addr: up}})
			c.Endpoints()[0].ObserveCheck(false, th)
			c.Endpoints()[1].ObserveCheck(true, th)
			for i := range 10 {
				if e := c.Pick(0, nil); e.Addr != up {
					t.Fatalf("pick %d: got %s, want %s", i, e.Addr, up)
				}
				conn, e, err := c.Dial(context.Background(), 0)
				if err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				conn.Close()
				if e.Addr != up {
					t.Fatalf("dial %d: got %s, want %s", i, e.Addr, up)
				}
			}
			if n := dials[down]; n != 0 {
				t.Errorf("dials to the unhealthy endpoint: got %d, want 0", n)
			}
		})
	}
}
