package upstream

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
)

// ZonePolicy is zone-aware routing (Envoy's zone aware routing, with
// Kubernetes' topology hints when the endpoints carry them): requests go to
// endpoints in the pod's own zone while that zone has enough healthy
// endpoints for its share of the traffic, and spill to other zones
// otherwise. It filters the candidates before the balance policy picks, so
// every policy works unchanged within the zone chosen.
//
// The share of the traffic a zone sends is taken to be its share of the
// cluster's endpoints, healthy or not: callers are assumed to be spread
// over zones like the endpoints they call (as Deployments with the same
// topology spread are). With every endpoint healthy each zone keeps its
// traffic; when the local zone has fewer healthy endpoints than its share,
// the surplus goes to the zones with spare healthy capacity, in proportion
// to it (Envoy's residual split).
type ZonePolicy struct {
	// Local returns the pod's zone now; "" while it is unknown (no zone
	// routing then). It is called on every pick and must be cheap.
	Local func() string
	// MinHealthy is the number of routable endpoints the local set needs
	// for zone routing; below it every zone is used. At least 1.
	MinHealthy int
	// MinClusterSize turns zone routing off for clusters with fewer
	// endpoints (Envoy's min_cluster_size).
	MinClusterSize int
	// Callers, when set, returns the calling service's endpoints (Envoy's
	// local cluster): their spread over zones is the callers' share of
	// the traffic, in place of the assumption above. Unused while none of
	// them is in the pod's zone.
	Callers func() []*Endpoint
	// Float64 returns a number in [0, 1); nil: math/rand/v2.
	Float64 func() float64
}

// ZoneMode is what zone-aware routing does with a cluster's requests now.
type ZoneMode int

const (
	// ZoneOff: no zone routing (not configured, pod zone unknown, cluster
	// below min_cluster_size, or no routable endpoint: panic mode).
	ZoneOff ZoneMode = iota
	// ZoneLocal: every request goes to the local zone.
	ZoneLocal
	// ZoneSplit: the local zone takes part of the requests, other zones
	// the surplus (the local zone has fewer healthy endpoints than its
	// share of the traffic).
	ZoneSplit
	// ZoneSpill: the local zone has fewer than min_healthy routable
	// endpoints; every zone is used.
	ZoneSpill
)

func (m ZoneMode) String() string {
	switch m {
	case ZoneLocal:
		return "local"
	case ZoneSplit:
		return "split"
	case ZoneSpill:
		return "spill"
	}
	return "off"
}

// ZoneStatus is a cluster's zone routing as /status shows it.
type ZoneStatus struct {
	Zone  string   // the pod's zone; "" while unknown
	Mode  ZoneMode //
	Hints bool     // the local set is the endpoints hinted for the zone
	// Callers: the callers' shares of the traffic came from their
	// endpoints (ZonePolicy.Callers).
	Callers bool
	// LocalShare is the fraction of requests kept in the local set: 1
	// under ZoneLocal, below 1 under ZoneSplit, 0 otherwise.
	LocalShare float64
	Reason     string // why the mode is off or spill
}

// zoneCount is one zone's endpoints: all of them and the routable ones.
type zoneCount struct {
	zone          string
	all, routable int
	callers       int     // ZonePolicy.Callers in the zone
	residual      float64 // share of spare routable capacity (split)
}

// zonePlan is the decision for one pick.
type zonePlan struct {
	mode    ZoneMode
	hints   bool
	local   string
	share   float64     // of requests kept local (split)
	zones   []zoneCount // other zones with their residual (split)
	callers bool        // the callers' shares came from ZonePolicy.Callers
	reason  string
}

// countCallers counts cs by zone into zs (callers in zones without
// upstream endpoints count only in the total) and returns the total.
func countCallers(cs []*Endpoint, zs []zoneCount) int {
	for _, e := range cs {
		if i := slices.IndexFunc(zs, func(x zoneCount) bool { return x.zone == e.Zone }); i >= 0 {
			zs[i].callers++
		}
	}
	return len(cs)
}

// hintedFor reports whether e's topology hints name zone.
func (e *Endpoint) hintedFor(zone string) bool {
	for rest := e.Hints; rest != ""; {
		var h string
		h, rest, _ = strings.Cut(rest, ",")
		if h == zone {
			return true
		}
	}
	return false
}

// zonePlan decides zone routing over eps at now. zs is scratch storage.
func (c *Cluster) zonePlan(eps []*Endpoint, now time.Time, zs []zoneCount) zonePlan {
	z := c.opts.Zone
	local := z.Local()
	if local == "" {
		return zonePlan{reason: "pod zone unknown"}
	}
	p := zonePlan{local: local}
	if len(eps) < z.MinClusterSize {
		p.reason = fmt.Sprintf("%d endpoints, below min_cluster_size %d", len(eps), z.MinClusterSize)
		return p
	}
	allHinted, anyForLocal := true, false
	routable, hintedRoutable := 0, 0
	for _, e := range eps {
		r := c.Routable(e, now)
		if len(e.Hints) == 0 {
			allHinted = false
		} else if e.hintedFor(local) {
			anyForLocal = true
			if r {
				hintedRoutable++
			}
		}
		if r {
			routable++
		}
		i := slices.IndexFunc(zs, func(x zoneCount) bool { return x.zone == e.Zone })
		if i < 0 {
			zs = append(zs, zoneCount{zone: e.Zone})
			i = len(zs) - 1
		}
		zs[i].all++
		if r {
			zs[i].routable++
		}
	}
	if routable == 0 {
		p.reason = "no routable endpoint (panic mode)"
		return p
	}
	// Kubernetes topology aware routing: the hints apply when every
	// endpoint has some and some are for this zone (kube-proxy's rule);
	// the EndpointSlice controller already balanced them, so the hinted
	// endpoints take all of this zone's traffic.
	if allHinted && anyForLocal {
		p.hints = true
		if hintedRoutable < z.MinHealthy {
			p.mode, p.reason = ZoneSpill, fmt.Sprintf("%d routable endpoints hinted for zone %s, below min_healthy %d", hintedRoutable, local, z.MinHealthy)
			return p
		}
		p.mode, p.share = ZoneLocal, 1
		return p
	}
	li := slices.IndexFunc(zs, func(x zoneCount) bool { return x.zone == local })
	var lc zoneCount
	if li >= 0 {
		lc = zs[li]
	}
	if lc.routable < z.MinHealthy || li < 0 {
		p.mode, p.reason = ZoneSpill, fmt.Sprintf("%d routable endpoints in zone %s, below min_healthy %d", lc.routable, local, z.MinHealthy)
		return p
	}
	// Envoy's percentages: the local zone's share of routable capacity
	// against its share of the callers (taken as its share of all
	// endpoints, unless the callers are known).
	callers := 0
	if z.Callers != nil {
		callers = countCallers(z.Callers(), zs)
		if callers == 0 || zs[li].callers == 0 {
			callers = 0
		}
	}
	p.callers = callers > 0
	callShare := func(c zoneCount) float64 {
		if callers > 0 {
			return float64(c.callers) / float64(callers)
		}
		return float64(c.all) / float64(len(eps))
	}
	upLocal := float64(lc.routable) / float64(routable)
	callLocal := callShare(zs[li])
	if upLocal >= callLocal {
		p.mode, p.share = ZoneLocal, 1
		return p
	}
	p.mode, p.share = ZoneSplit, upLocal/callLocal
	total := 0.0
	for i := range zs {
		if i == li {
			continue
		}
		r := float64(zs[i].routable)/float64(routable) - callShare(zs[i])
		if r > 0 {
			zs[i].residual = r
			total += r
		}
	}
	if total == 0 {
		// Cannot happen (the residuals sum to the local deficit); all
		// zones rather than a division by zero.
		p.mode, p.share, p.reason = ZoneSpill, 0, "no zone with spare capacity"
		return p
	}
	p.zones = zs
	return p
}

// zoneFilter marks the candidates outside the zone this pick goes to as
// unusable. When none of that zone's candidates is usable (each was tried
// already), it leaves every zone usable: a retry spills rather than fails.
func (c *Cluster) zoneFilter(cands []balance.Candidate, eps []*Endpoint, now time.Time) {
	var buf [8]zoneCount
	p := c.zonePlan(eps, now, buf[:0])
	var in func(e *Endpoint) bool
	switch p.mode {
	case ZoneLocal, ZoneSplit:
		in = func(e *Endpoint) bool { return e.Zone == p.local }
		if p.hints {
			in = func(e *Endpoint) bool { return e.hintedFor(p.local) }
		}
		if p.mode == ZoneSplit {
			if x := c.float64(); x >= p.share {
				zone := residualZone(p.zones, (x-p.share)/(1-p.share))
				in = func(e *Endpoint) bool { return e.Zone == zone }
			}
		}
	default:
		return
	}
	found := false
	for i, e := range eps {
		if cands[i].Usable && in(e) {
			found = true
			break
		}
	}
	if !found {
		return
	}
	for i, e := range eps {
		if !in(e) {
			cands[i].Usable = false
		}
	}
}

// residualZone picks the zone whose cumulative residual share covers x, a
// number in [0, 1).
func residualZone(zs []zoneCount, x float64) string {
	total := 0.0
	for _, z := range zs {
		total += z.residual
	}
	x *= total
	last := ""
	for _, z := range zs {
		if z.residual <= 0 {
			continue
		}
		if x < z.residual {
			return z.zone
		}
		x -= z.residual
		last = z.zone
	}
	return last // rounding
}

func (c *Cluster) float64() float64 {
	if f := c.opts.Zone.Float64; f != nil {
		return f()
	}
	return rand.Float64()
}

// countLocality tells the observer whether the endpoint a pick chose is in
// the pod's zone.
func (c *Cluster) countLocality(e *Endpoint) {
	if c.opts.Observer.Routed == nil {
		return
	}
	local := c.opts.Zone.Local()
	if local == "" {
		return
	}
	c.opts.Observer.Routed(e, e.Zone == local)
}

// ZoneStatus returns what zone-aware routing does with the cluster's
// requests now; ok is false when the cluster has none configured.
func (c *Cluster) ZoneStatus() (st ZoneStatus, ok bool) {
	if c.opts.Zone == nil {
		return ZoneStatus{}, false
	}
	p := c.zonePlan(c.Endpoints(), c.opts.Now(), nil)
	st = ZoneStatus{Zone: p.local, Mode: p.mode, Hints: p.hints, Callers: p.callers, Reason: p.reason}
	switch p.mode {
	case ZoneLocal:
		st.LocalShare = 1
	case ZoneSplit:
		st.LocalShare = p.share
	}
	return st, true
}
