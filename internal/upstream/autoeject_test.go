package upstream

import (
	"testing"
	"time"
)

// TestFailurePolicy: twemproxy's auto_eject_hosts on an endpoint: Limit
// failures in a row eject it for RetryTimeout, always the same time; a
// success between resets the count; failures while ejected count
// nothing; every endpoint may be ejected (no max_ejection_percent).
func TestFailurePolicy(t *testing.T) {
	now := time.Unix(1000, 0)
	var ejected []string
	c := New(Options{Name: "c", Now: func() time.Time { return now },
		Observer: Observer{Ejected: func(e *Endpoint) { ejected = append(ejected, e.Addr) }}})
	c.SetEndpoints([]Target{{Addr: "a:1"}, {Addr: "b:1"}})
	a, b := c.Endpoints()[0], c.Endpoints()[1]
	p := FailurePolicy{Limit: 3, RetryTimeout: 10 * time.Second}

	c.RecordFailure(a, p, nil)
	c.RecordFailure(a, p, nil)
	a.RecordSuccess()
	if c.RecordFailure(a, p, nil) || c.RecordFailure(a, p, nil) {
		t.Fatal("ejected before Limit failures in a row (a success came between)")
	}
	epoch := c.Epoch()
	if !c.RecordFailure(a, p, nil) || !a.Ejected(now) {
		t.Fatal("not ejected at Limit failures in a row")
	}
	if c.Epoch() == epoch {
		t.Error("an ejection did not move the epoch")
	}
	if got := a.EjectedUntil(); !got.Equal(now.Add(10 * time.Second)) {
		t.Errorf("ejected until %v, want %v", got, now.Add(10*time.Second))
	}
	for range 6 {
		if c.RecordFailure(a, p, nil) {
			t.Fatal("ejected again while ejected")
		}
	}
	for range 3 {
		c.RecordFailure(b, p, nil)
	}
	if !b.Ejected(now) {
		t.Error("the last endpoint was not ejected: a FailurePolicy has no max_ejection_percent")
	}
	now = now.Add(10 * time.Second)
	if a.Ejected(now) {
		t.Error("still ejected after RetryTimeout")
	}
	// Back and still failing: Limit failures again, and the same time.
	c.RecordFailure(a, p, nil)
	c.RecordFailure(a, p, nil)
	if !c.RecordFailure(a, p, nil) || !a.EjectedUntil().Equal(now.Add(10*time.Second)) {
		t.Errorf("second ejection: until %v, want %v (no back-off)", a.EjectedUntil(), now.Add(10*time.Second))
	}
	if len(ejected) != 3 {
		t.Errorf("Observer.Ejected calls: %v, want a, b, a", ejected)
	}
}

// TestEpoch: the epoch moves with the endpoint set, a health flip and the
// end of an ejection by a passing check, not with a check that changes
// nothing; an inheriting generation shares it.
func TestEpoch(t *testing.T) {
	c := New(Options{Name: "c", HasHealthCheck: true})
	e0 := c.Epoch()
	c.SetEndpoints([]Target{{Addr: "a:1"}})
	if c.Epoch() == e0 {
		t.Fatal("SetEndpoints did not move the epoch")
	}
	a := c.Endpoints()[0]
	th := Thresholds{Healthy: 1, Unhealthy: 1}
	e1 := c.Epoch()
	a.ObserveCheck(true, th)
	e2 := c.Epoch()
	if e2 == e1 {
		t.Error("unknown to healthy did not move the epoch")
	}
	a.ObserveCheck(true, th)
	if c.Epoch() != e2 {
		t.Error("a pass that changed nothing moved the epoch")
	}
	c.RecordFailure(a, FailurePolicy{Limit: 1, RetryTimeout: time.Minute}, nil)
	e3 := c.Epoch()
	a.ObserveCheck(true, th)
	if c.Epoch() == e3 || a.Ejected(time.Now()) {
		t.Error("a pass that ended an ejection did not move the epoch")
	}

	next := New(Options{Name: "c"})
	next.Inherit(c)
	e4 := c.Epoch()
	a.ObserveCheck(false, th)
	if next.Epoch() == e4 || next.Epoch() != c.Epoch() {
		t.Error("an inheriting generation does not share the epoch")
	}
}

// TestEndpointNames: a target's name is its endpoint's; an endpoint is
// kept across endpoint sets by address and name, so that two names on
// one address are two endpoints, and a renamed one is another.
func TestEndpointNames(t *testing.T) {
	c := New(Options{Name: "c"})
	c.SetEndpoints([]Target{{Addr: "a:1", Name: "x"}, {Addr: "a:1", Name: "y"}})
	x, y := c.Endpoints()[0], c.Endpoints()[1]
	if x == y || x.Name != "x" || y.Name != "y" {
		t.Fatalf("endpoints %+v %+v, want two named x and y", x, y)
	}
	c.SetEndpoints([]Target{{Addr: "a:1", Name: "y"}, {Addr: "a:1", Name: "z"}})
	if got := c.Endpoints(); got[0] != y || got[1] == x || got[1].Name != "z" {
		t.Errorf("after renaming x to z: %+v", got)
	}
}
