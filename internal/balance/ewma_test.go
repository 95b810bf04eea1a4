package balance

import (
	"math"
	"testing"
	"time"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newEWMAAt(clock *fakeClock) *EWMA       { p := NewEWMA(0, 0); p.Now = clock.now; return p }
func near(got, want time.Duration) bool      { return math.Abs(float64(got-want)) <= float64(want)/1000+1 }
func ewmaCands(rtts ...*RTT) []Candidate {
	cs := cands(make([]int, len(rtts))...)
	for i := range cs {
		cs[i].Weight, cs[i].RTT = 1, rtts[i]
	}
	return cs
}

// TestEWMACost: between two candidates the one of lower
// rtt × (active + 1) / weight wins, whichever is drawn first.
func TestEWMACost(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p := newEWMAAt(clock)
	fast, slow := &RTT{}, &RTT{}
	p.Observe(fast, 10*time.Millisecond, false)
	p.Observe(slow, 30*time.Millisecond, false)
	for _, c := range []struct {
		name                   string
		fastActive, fastWeight int64
		slowActive             int64
		want                   int
	}{
		{"idle: the faster", 0, 1, 0, 0},
		{"10ms×4 against 30ms×1: the slower", 3, 1, 0, 1},
		{"10ms×4/2 against 30ms×1: the faster", 3, 2, 0, 0},
		{"10ms×3 against 30ms×2: the faster", 2, 1, 1, 0},
	} {
		cs := ewmaCands(fast, slow)
		cs[0].Active, cs[0].Weight, cs[1].Active = c.fastActive, int(c.fastWeight), c.slowActive
		for range 50 {
			if got := p.Pick(cs, 0); got != c.want {
				t.Fatalf("%s: picked %d, want %d", c.name, got, c.want)
			}
		}
	}
}

// TestEWMAPeakAndDecay: a slower observation replaces the estimate at
// once; a faster one does not lower it; the estimate decays toward zero
// with the time constant.
func TestEWMAPeakAndDecay(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p := newEWMAAt(clock)
	r := &RTT{}
	p.Observe(r, 100*time.Millisecond, false)
	if got, ok := p.Estimate(r); !ok || got != 100*time.Millisecond {
		t.Fatalf("after one observation: %v (measured %v), want 100ms", got, ok)
	}
	clock.advance(p.Decay)
	want := time.Duration(float64(100*time.Millisecond) * math.Exp(-1))
	if got, _ := p.Estimate(r); !near(got, want) {
		t.Errorf("one decay period later: %v, want %v", got, want)
	}
	p.Observe(r, 5*time.Millisecond, false)
	if got, _ := p.Estimate(r); !near(got, want) {
		t.Errorf("a faster observation lowered the estimate to %v, want %v", got, want)
	}
	p.Observe(r, 200*time.Millisecond, false)
	if got, _ := p.Estimate(r); got != 200*time.Millisecond {
		t.Errorf("a slower observation: %v, want 200ms at once", got)
	}
	clock.advance(10 * p.Decay)
	if got, _ := p.Estimate(r); got > 10*time.Microsecond {
		t.Errorf("ten decay periods later: %v, want about zero", got)
	}
}

// TestEWMAUnobserved: an endpoint never observed is drawn at once while
// idle, and otherwise costs the default RTT, decaying from when a pick
// first saw it; its first measurement replaces the default even when
// lower, and a failure only ever raises it, renewing its last peak (and
// ends the free draw).
func TestEWMAUnobserved(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p := newEWMAAt(clock)
	r := &RTT{}
	if got, ok := p.Estimate(r); got != 0 || ok {
		t.Fatalf("never seen: %v %v, want nothing", got, ok)
	}
	known := &RTT{}
	p.Observe(known, 20*time.Millisecond, false)
	cs := ewmaCands(r, known)
	if got := p.Pick(cs, 0); got != 0 {
		t.Errorf("unobserved and idle against 20ms: picked %d, want 0 (drawn at once)", got)
	}
	if got, ok := p.Estimate(r); got != 0 || ok {
		t.Errorf("idle and never observed: estimate %v %v, want none", got, ok)
	}
	// A request in flight: 30ms (default) × 2 against 20ms, the known one.
	cs[0].Active = 1
	if got := p.Pick(cs, 0); got != 1 {
		t.Errorf("unobserved with a request in flight at the default 30ms against 20ms: picked %d, want 1", got)
	}
	if got, ok := p.Estimate(r); got != DefaultEWMADefaultRTT || ok {
		t.Errorf("first seen: %v (measured %v), want the default %v", got, ok, DefaultEWMADefaultRTT)
	}
	clock.advance(p.Decay)
	want := time.Duration(float64(DefaultEWMADefaultRTT) * math.Exp(-1))
	if got, _ := p.Estimate(r); !near(got, want) {
		t.Errorf("one decay period after first seen: %v, want %v", got, want)
	}
	p.Observe(r, time.Millisecond, true) // a fast failure
	if got, ok := p.Estimate(r); got != DefaultEWMADefaultRTT || ok {
		t.Errorf("after a fast failure: %v (measured %v), want the default %v renewed", got, ok, DefaultEWMADefaultRTT)
	}
	want = DefaultEWMADefaultRTT
	cs[0].Active = 0
	faster := &RTT{}
	p.Observe(faster, 5*time.Millisecond, false)
	if got := p.Pick(ewmaCands(r, faster), 0); got != 1 {
		t.Errorf("failed once, idle, at %v against 5ms: picked %d, want 1 (no free draw after a failure)", want, got)
	}
	p.Observe(r, time.Second, true) // a timeout
	if got, ok := p.Estimate(r); got != time.Second || ok {
		t.Errorf("after a 1s failure: %v (measured %v), want 1s", got, ok)
	}
	p.Observe(r, 2*time.Millisecond, false)
	if got, ok := p.Estimate(r); got != 2*time.Millisecond || !ok {
		t.Errorf("first measurement: %v (measured %v), want 2ms replacing the guess", got, ok)
	}
	clock.advance(p.Decay)
	p.Observe(r, time.Millisecond, true)
	if got, _ := p.Estimate(r); got != 2*time.Millisecond {
		t.Errorf("a fast failure a decay period after a 2ms measurement: %v, want 2ms renewed", got)
	}
	// nil RTT: the default
	slow := &RTT{}
	p.Observe(slow, 40*time.Millisecond, false)
	if got := p.Pick([]Candidate{{ID: "a", Weight: 1, Usable: true}, {ID: "b", Weight: 1, Usable: true, RTT: slow}}, 0); got != 0 {
		t.Errorf("nil RTT (30ms) against 40ms: picked %d, want 0", got)
	}
}

// TestEWMATwoChoices: two distinct usable candidates are drawn, so with
// costs c0 < c1 < c2 < c3 the shares are those of the pairs each wins:
// 3/6, 2/6, 1/6 and never the costliest; unusable ones are never drawn.
func TestEWMATwoChoices(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p := newEWMAAt(clock)
	var rtts []*RTT
	for i := range 5 {
		r := &RTT{}
		p.Observe(r, time.Duration(i+1)*time.Millisecond, false)
		rtts = append(rtts, r)
	}
	cs := ewmaCands(rtts...)
	cs[2].Usable = false // 3ms: out
	const n = 60000
	got := counts(t, p, cs, n)
	want := []float64{3.0 / 6, 2.0 / 6, 0, 1.0 / 6, 0}
	for i, w := range want {
		if r := float64(got[i]) / n; math.Abs(r-w) > 0.02 {
			t.Errorf("candidate %d: share %.3f, want %.3f (counts %v)", i, r, w, got)
		}
	}
	if got[4] != 0 {
		t.Errorf("the costliest was picked %d times; it loses every pair", got[4])
	}
	if allocs := testing.AllocsPerRun(1000, func() { p.Pick(cs, 0) }); allocs != 0 {
		t.Errorf("%.1f allocations per pick, want none", allocs)
	}
}
