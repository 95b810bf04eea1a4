package upstream

import (
	"context"
	"errors"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
)

// zoned is an endpoint description for zone tests: "addr zone [down]
// [hint=zone,zone]".
type zoned string

// zoneCluster returns a health-checked cluster of eps with zone-aware
// routing from zone local; endpoints marked down are unhealthy, the others
// healthy.
func zoneCluster(t *testing.T, policy, local string, zp ZonePolicy, eps ...zoned) *Cluster {
	t.Helper()
	p, err := balance.New(policy)
	if err != nil {
		t.Fatal(err)
	}
	zp.Local = func() string { return local }
	if zp.MinHealthy == 0 {
		zp.MinHealthy = 1
	}
	c := New(Options{Name: "users", Picker: p, HasHealthCheck: true, Zone: &zp})
	var ts []Target
	down := map[string]bool{}
	for _, s := range eps {
		f := strings.Fields(string(s))
		tg := Target{Addr: f[0], Zone: f[1], Weight: 1}
		if tg.Zone == "-" {
			tg.Zone = ""
		}
		for _, o := range f[2:] {
			if o == "down" {
				down[f[0]] = true
			} else if h, ok := strings.CutPrefix(o, "hint="); ok {
				tg.Hints = h
			}
		}
		ts = append(ts, tg)
	}
	c.SetEndpoints(ts)
	for _, e := range c.Endpoints() {
		e.ObserveCheck(!down[e.Addr], Thresholds{Healthy: 1, Unhealthy: 1})
	}
	return c
}

// picks counts the endpoints n picks choose, by address.
func picks(c *Cluster, n int, skip func(*Endpoint) bool) map[string]int {
	got := map[string]int{}
	for i := range n {
		if e := c.Pick(uint64(i)*0x9e3779b97f4a7c15, skip); e != nil {
			got[e.Addr]++
		} else {
			got["<nil>"]++
		}
	}
	return got
}

func TestZonePick(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		local string
		zp    ZonePolicy
		eps   []zoned
		skip  string // an address tried already
		want  []string
		mode  ZoneMode
	}{
		{"local preferred", "a", ZonePolicy{},
			[]zoned{"a1 a", "a2 a", "b1 b", "b2 b"}, "", []string{"a1", "a2"}, ZoneLocal},
		{"local unhealthy spills to the other zones", "a", ZonePolicy{},
			[]zoned{"a1 a down", "a2 a down", "b1 b", "c1 c"}, "", []string{"b1", "c1"}, ZoneSpill},
		{"below min_healthy every zone", "a", ZonePolicy{MinHealthy: 2},
			[]zoned{"a1 a", "a2 a down", "b1 b", "b2 b"}, "", []string{"a1", "b1", "b2"}, ZoneSpill},
		{"no local endpoint at all", "c", ZonePolicy{},
			[]zoned{"a1 a", "b1 b"}, "", []string{"a1", "b1"}, ZoneSpill},
		{"endpoints without a zone are another zone", "a", ZonePolicy{},
			[]zoned{"a1 a", "x1 -", "x2 -"}, "", []string{"a1"}, ZoneLocal},
		{"without a zone spill to them", "a", ZonePolicy{},
			[]zoned{"a1 a down", "x1 -", "x2 -"}, "", []string{"x1", "x2"}, ZoneSpill},
		{"below min_cluster_size no zone routing", "a", ZonePolicy{MinClusterSize: 5},
			[]zoned{"a1 a", "b1 b", "b2 b", "b3 b"}, "", []string{"a1", "b1", "b2", "b3"}, ZoneOff},
		{"pod zone unknown no zone routing", "", ZonePolicy{},
			[]zoned{"a1 a", "b1 b"}, "", []string{"a1", "b1"}, ZoneOff},
		{"panic mode unchanged", "a", ZonePolicy{},
			[]zoned{"a1 a down", "b1 b down"}, "", []string{"a1", "b1"}, ZoneOff},
		{"retry spills once the local zone was tried", "a", ZonePolicy{},
			[]zoned{"a1 a", "b1 b", "b2 b"}, "a1", []string{"b1", "b2"}, ZoneLocal},
		{"hints take the place of zones", "a", ZonePolicy{},
			[]zoned{"a1 a hint=a", "b1 b hint=a", "b2 b hint=b", "b3 b hint=b"}, "", []string{"a1", "b1"}, ZoneLocal},
		{"hints ignored when one endpoint has none", "a", ZonePolicy{},
			[]zoned{"a1 a hint=a", "b1 b hint=a", "b2 b"}, "", []string{"a1"}, ZoneLocal},
		{"hints ignored when none is for this zone", "c", ZonePolicy{},
			[]zoned{"a1 a hint=a", "c1 c hint=a", "b1 b hint=b"}, "", []string{"c1"}, ZoneLocal},
		{"hinted endpoints unhealthy spill", "a", ZonePolicy{},
			[]zoned{"a1 a hint=a down", "b1 b hint=b", "b2 b hint=b"}, "", []string{"b1", "b2"}, ZoneSpill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := zoneCluster(t, "round_robin", tc.local, tc.zp, tc.eps...)
			var skip func(*Endpoint) bool
			if tc.skip != "" {
				skip = func(e *Endpoint) bool { return e.Addr == tc.skip }
			}
			got := picks(c, 60, skip)
			var gotAddrs []string
			for _, a := range []string{"a1", "a2", "b1", "b2", "b3", "c1", "x1", "x2", "<nil>"} {
				if got[a] > 0 {
					gotAddrs = append(gotAddrs, a)
				}
			}
			if strings.Join(gotAddrs, " ") != strings.Join(tc.want, " ") {
				t.Errorf("picked %v, want %v", got, tc.want)
			}
			st, ok := c.ZoneStatus()
			if !ok || st.Mode != tc.mode {
				t.Errorf("mode: got %v (%q), want %v", st.Mode, st.Reason, tc.mode)
			}
		})
	}
}

// TestZoneSplit: with half its endpoints down, the local zone keeps the
// share of requests its healthy endpoints can take (Envoy's percentages)
// and the surplus goes to the other zones by their spare capacity.
func TestZoneSplit(t *testing.T) {
	t.Parallel()
	// 12 endpoints, 4 per zone: each zone's callers send a third of the
	// traffic. Zone a has 2 routable of 10 (20% of capacity): it keeps
	// 0.2/0.333 = 60% of its requests. b has 4 routable (40%, residual
	// 6.7%), c 4 (residual 6.7%): 20% each.
	var mu sync.Mutex
	x := 0.0
	const n = 1000
	zp := ZonePolicy{Float64: func() float64 {
		// Evenly spread in [0, 1), so the shares come out exact.
		mu.Lock()
		defer mu.Unlock()
		v := x
		x += 1.0 / n
		return v
	}}
	c := zoneCluster(t, "round_robin", "a", zp,
		"a1 a", "a2 a", "a3 a down", "a4 a down",
		"b1 b", "b2 b", "b3 b", "b4 b",
		"c1 c", "c2 c", "c3 c", "c4 c")
	got := picks(c, n, nil)
	byZone := map[byte]int{}
	for a, k := range got {
		byZone[a[0]] += k
	}
	for z, want := range map[byte]int{'a': 600, 'b': 200, 'c': 200} {
		if d := byZone[z] - want; d < -2 || d > 2 {
			t.Errorf("zone %c: got %d of %d picks, want %d", z, byZone[z], n, want)
		}
	}
	if got["a3"]+got["a4"] != 0 {
		t.Errorf("unhealthy local endpoints picked: %v", got)
	}
	st, _ := c.ZoneStatus()
	if st.Mode != ZoneSplit || math.Abs(st.LocalShare-0.6) > 1e-9 {
		t.Errorf("status: got %v share %v, want split 0.6", st.Mode, st.LocalShare)
	}
}

// TestZoneSplitResidualByCapacity: the surplus goes to the zone with spare
// capacity only, not to one that lost endpoints too.
func TestZoneSplitResidualByCapacity(t *testing.T) {
	t.Parallel()
	c := zoneCluster(t, "round_robin", "a", ZonePolicy{},
		"a1 a", "a2 a down",
		"b1 b", "b2 b down",
		"c1 c", "c2 c")
	got := picks(c, 300, nil)
	if got["b1"] != 0 {
		t.Errorf("zone b, short of capacity itself, took %d surplus picks: %v", got["b1"], got)
	}
	if got["a1"] == 0 || got["c1"]+got["c2"] == 0 {
		t.Errorf("want picks in a and c: %v", got)
	}
}

// TestZoneEveryPolicy: the zone filter comes before the policy, so every
// policy picks within the local zone.
func TestZoneEveryPolicy(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"round_robin", "weighted", "least_request", "random", "p2c", "ring_hash", "first", "ewma"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			c := zoneCluster(t, policy, "b", ZonePolicy{}, "a1 a", "a2 a", "b1 b", "b2 b", "c1 c")
			for a, k := range picks(c, 200, nil) {
				if a[0] != 'b' {
					t.Errorf("picked %s %d times, want zone b only", a, k)
				}
			}
		})
	}
}

func TestZoneRoutedObserver(t *testing.T) {
	t.Parallel()
	var local, other int
	p, _ := balance.New("round_robin")
	zone := "a"
	c := New(Options{Name: "users", Picker: p, Zone: &ZonePolicy{Local: func() string { return zone }, MinHealthy: 1},
		Observer: Observer{Routed: func(_ *Endpoint, l bool) {
			if l {
				local++
			} else {
				other++
			}
		}}})
	c.SetEndpoints([]Target{{Addr: "a1", Zone: "a"}, {Addr: "b1", Zone: "b"}})
	for range 10 {
		c.Pick(0, nil)
	}
	c.Endpoints()[0].ObserveCheck(false, Thresholds{Healthy: 1, Unhealthy: 1})
	for range 5 {
		c.Pick(0, nil)
	}
	if local != 10 || other != 5 {
		t.Errorf("got local %d other %d, want 10 and 5", local, other)
	}
	zone = ""
	c.Pick(0, nil)
	if local+other != 15 {
		t.Errorf("counted a pick with the pod zone unknown")
	}
}

// TestZoneChangeKeepsState: an endpoint whose zone or hints change is a new
// Endpoint (they are read without locks) with the old one's health.
func TestZoneChangeKeepsState(t *testing.T) {
	t.Parallel()
	c := zoneCluster(t, "round_robin", "a", ZonePolicy{}, "a1 a down", "b1 b")
	c.SetEndpoints([]Target{{Addr: "a1", Zone: "b", Weight: 1}, {Addr: "b1", Zone: "b", Weight: 1}})
	e := c.Endpoints()[0]
	if e.Zone != "b" || e.Health() != Unhealthy {
		t.Errorf("got zone %q health %v, want b unhealthy", e.Zone, e.Health())
	}
	same := c.Endpoints()[1]
	c.SetEndpoints([]Target{{Addr: "a1", Zone: "b", Weight: 1}, {Addr: "b1", Zone: "b", Weight: 1}})
	if c.Endpoints()[1] != same {
		t.Error("an unchanged endpoint was replaced")
	}
	c.SetEndpoints([]Target{{Addr: "a1", Zone: "b", Weight: 1}, {Addr: "b1", Zone: "b", Weight: 1, Hints: "a"}})
	if c.Endpoints()[1] == same || c.Endpoints()[1].Health() != Healthy {
		t.Error("new hints did not make a new endpoint with the old state")
	}
}

// FuzzZoneFilter feeds zone routing endpoint sets as discovery reports
// them (zones and hints from an API server or Consul, health): a pick
// never loses every usable candidate, and the shares stay in [0, 1].
func FuzzZoneFilter(f *testing.F) {
	f.Add("a,b,b,,c", "a,a;b,,", "a", uint16(0b10110), 0.3, uint8(1))
	f.Add("a,a,a", ";;", "a", uint16(0), 0.9, uint8(2))
	f.Add("x", "x,y", "y", uint16(1), 0.0, uint8(1))
	f.Fuzz(func(t *testing.T, zones, hints, local string, down uint16, x float64, minHealthy uint8) {
		zs := strings.Split(zones, ",")
		hs := strings.Split(hints, ";")
		if len(zs) > 16 {
			zs = zs[:16]
		}
		if x != x || x < 0 || x >= 1 {
			x = 0.5
		}
		p, _ := balance.New("round_robin")
		c := New(Options{Name: "f", Picker: p, HasHealthCheck: true, Zone: &ZonePolicy{
			Local: func() string { return local }, MinHealthy: max(int(minHealthy)%4, 1), Float64: func() float64 { return x }}})
		var ts []Target
		for i, z := range zs {
			tg := Target{Addr: string(rune('A'+i)) + ":1", Zone: z}
			if i < len(hs) {
				tg.Hints = hs[i]
			}
			ts = append(ts, tg)
		}
		c.SetEndpoints(ts)
		anyUp := false
		for i, e := range c.Endpoints() {
			up := down&(1<<i) == 0
			anyUp = anyUp || up
			e.ObserveCheck(up, Thresholds{Healthy: 1, Unhealthy: 1})
		}
		if e := c.Pick(0, nil); e == nil {
			t.Fatalf("no endpoint picked from %q", zones)
		} else if anyUp && e.Health() != Healthy {
			t.Fatalf("picked unhealthy %s with healthy ones left", e.Addr)
		}
		st, _ := c.ZoneStatus()
		if st.LocalShare < 0 || st.LocalShare > 1 {
			t.Fatalf("local share %v", st.LocalShare)
		}
	})
}

// TestZonePickAllocs: zone routing adds no allocation to a pick (the
// HTTP fast path picks per request).
func TestZonePickAllocs(t *testing.T) {
	c := zoneCluster(t, "round_robin", "a", ZonePolicy{Float64: func() float64 { return 0.9 }},
		"a1 a", "a2 a down", "b1 b", "b2 b", "c1 c", "c2 c")
	c.Pick(0, nil)
	if n := testing.AllocsPerRun(100, func() { c.Pick(0, nil) }); n != 0 {
		t.Errorf("got %v allocations per pick, want 0", n)
	}
}

// TestZoneDialSpillsToRoutable: when the local endpoint's connect fails,
// Dial goes on to the other zones' healthy endpoints before any unhealthy
// one (without the zone filter, list order would try the unhealthy x1
// first).
func TestZoneDialSpillsToRoutable(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var dialed []string
	p, _ := balance.New("round_robin")
	c := New(Options{Name: "users", Picker: p, HasHealthCheck: true, ConnectTimeout: time.Second,
		Zone: &ZonePolicy{Local: func() string { return "a" }, MinHealthy: 1},
		Dial: func(_ context.Context, _, addr string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, addr)
			mu.Unlock()
			if addr != "b1" {
				return nil, errors.New("connection refused")
			}
			c1, c2 := net.Pipe()
			c2.Close()
			return c1, nil
		}})
	c.SetEndpoints([]Target{{Addr: "a1", Zone: "a"}, {Addr: "x1", Zone: "b"}, {Addr: "b1", Zone: "b"}})
	for _, e := range c.Endpoints() {
		e.ObserveCheck(e.Addr != "x1", Thresholds{Healthy: 1, Unhealthy: 1})
	}
	conn, ep, err := c.Dial(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if ep.Addr != "b1" || strings.Join(dialed, " ") != "a1 b1" {
		t.Errorf("got %s after dialing %v, want b1 after a1 b1", ep.Addr, dialed)
	}
}

// TestZoneSplitByCallers: with the callers' endpoints known (Envoy's local
// cluster), their spread sets each zone's share: 3 of 4 callers in zone a
// against 2 of 4 upstream endpoints keep 0.5/0.75 = 2/3 of a's requests
// local, the rest to b.
func TestZoneSplitByCallers(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	x := 0.0
	const n = 900
	callers := []*Endpoint{{Zone: "a"}, {Zone: "a"}, {Zone: "a"}, {Zone: "b"}}
	c := zoneCluster(t, "round_robin", "a", ZonePolicy{
		Callers: func() []*Endpoint { return callers },
		Float64: func() float64 {
			mu.Lock()
			defer mu.Unlock()
			v := x
			x += 1.0 / n
			return v
		}}, "a1 a", "a2 a", "b1 b", "b2 b")
	got := picks(c, n, nil)
	if a := got["a1"] + got["a2"]; a < 598 || a > 602 {
		t.Errorf("zone a: got %d of %d picks, want 600", a, n)
	}
	st, _ := c.ZoneStatus()
	if st.Mode != ZoneSplit || !st.Callers {
		t.Errorf("status: got %+v, want split by callers", st)
	}
	// Callers none of which is in the pod's zone are not used.
	callers = []*Endpoint{{Zone: "b"}}
	if st, _ := c.ZoneStatus(); st.Mode != ZoneLocal || st.Callers {
		t.Errorf("status with no caller in the zone: got %+v, want local without callers", st)
	}
}
