package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
)

// TestDialFeedsLatency: under ewma a connection's connect time is the
// endpoint's measurement; a refused connect is no measurement (it may
// only raise the estimate); the estimate stays with the endpoint across a
// weight change and a reload.
func TestDialFeedsLatency(t *testing.T) {
	up, down := listen(t)
	c := newCluster(t, "ewma", OutlierPolicy{}, nil)
	if !c.LearnsLatency() {
		t.Fatal("ewma cluster does not learn latencies")
	}
	c.SetEndpoints([]Target{{Addr: down}, {Addr: up}})
	for range 4 { // each endpoint is drawn; the refused one is redispatched
		conn, ep, err := c.Dial(context.Background(), 0)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		conn.Close()
		if ep.Addr != up {
			t.Fatalf("connected to %s", ep.Addr)
		}
	}
	byAddr := map[string]*Endpoint{}
	for _, e := range c.Endpoints() {
		byAddr[e.Addr] = e
	}
	d, measured, ok := c.LatencyEstimate(byAddr[up])
	if !ok || !measured || d <= 0 || d >= balance.DefaultEWMADefaultRTT {
		t.Errorf("listening endpoint: estimate %v measured %v ok %v, want a loopback connect time", d, measured, ok)
	}
	if _, measured, _ := c.LatencyEstimate(byAddr[down]); measured {
		t.Error("refused endpoint counts as measured: a fast failure would make it look fast")
	}

	c.SetEndpoints([]Target{{Addr: up, Weight: 3}})
	if _, measured, _ := c.LatencyEstimate(c.Endpoints()[0]); !measured {
		t.Error("estimate lost on a weight change")
	}
	next := newCluster(t, "ewma", OutlierPolicy{}, nil)
	next.Inherit(c)
	next.SetEndpoints([]Target{{Addr: up, Weight: 3}})
	if _, measured, _ := next.LatencyEstimate(next.Endpoints()[0]); !measured {
		t.Error("estimate lost on a reload")
	}

	rr := newCluster(t, "round_robin", OutlierPolicy{}, nil)
	rr.SetEndpoints([]Target{{Addr: up}})
	if rr.LearnsLatency() {
		t.Error("round_robin learns latencies")
	}
	if _, _, ok := rr.LatencyEstimate(rr.Endpoints()[0]); ok {
		t.Error("round_robin endpoint has an estimate")
	}
}

// TestPickEWMA: the cluster's ewma pick prefers the endpoint observed
// faster and allocates nothing.
func TestPickEWMA(t *testing.T) {
	c := newCluster(t, "ewma", OutlierPolicy{}, nil)
	c.SetEndpoints([]Target{{Addr: "a:1"}, {Addr: "b:1"}})
	eps := c.Endpoints()
	c.ObserveLatency(eps[0], 50*time.Millisecond, false)
	c.ObserveLatency(eps[1], time.Millisecond, false)
	for range 20 {
		if got := c.Pick(0, nil); got != eps[1] {
			t.Fatalf("picked %s, want the faster b:1", got.Addr)
		}
	}
	if got := c.Pick(0, func(e *Endpoint) bool { return e == eps[1] }); got != eps[0] {
		t.Errorf("faster one skipped: got %v, want a:1", got)
	}
	if allocs := testing.AllocsPerRun(1000, func() { c.Pick(0, nil) }); allocs >= 0.5 {
		t.Errorf("%.2f allocations per pick, want none", allocs)
	}
}
