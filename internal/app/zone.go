package app

import (
	"context"
	"reflect"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/config"
	kubediscovery "github.com/attache-proxy/attache/internal/discovery/kubernetes"
	"github.com/attache-proxy/attache/internal/metrics"
	"github.com/attache-proxy/attache/internal/upstream"
	"github.com/attache-proxy/attache/internal/zone"
)

// zoneState is the pod's zone, kept outside configuration generations:
// clusters read it on every pick, and a reload that changes the zone
// setting changes it under the clusters it keeps.
type zoneState struct {
	local zone.Local

	cfg    *config.Zone       // applied; a.mu
	cancel context.CancelFunc // ends the node label read; a.mu

	once     sync.Once
	requests *prometheus.CounterVec // attache_cluster_zone_requests_total
}

// applyZone makes cfg's zone the pod's. Called with a.mu held, once the
// generation built from cfg is sure to be applied.
func (a *App) applyZone(cfg *config.Config) {
	z := &a.zone
	if reflect.DeepEqual(z.cfg, cfg.Zone) {
		return
	}
	if z.cancel != nil {
		z.cancel()
		z.cancel = nil
	}
	z.cfg = cfg.Zone
	switch c := cfg.Zone; {
	case c == nil:
		z.local.Set("")
	case c.NodeLabel == "":
		z.local.Set(c.Name) // from_env was resolved into Name by config.Parse
		if c.Name == "" {
			a.log.Warn("the pod's zone is unknown: its environment variable is empty; routing ignores zones", "variable", c.FromEnv)
		} else {
			a.log.Info("pod zone", "zone", c.Name)
		}
	case c.NodeName == "":
		z.local.Set("")
		a.log.Warn("the pod's zone is unknown: the node name variable is empty; routing ignores zones", "variable", c.NodeNameEnv)
	default:
		z.local.Set("")
		log := a.log.With("node", c.NodeName, "label", c.NodeLabel)
		client, err := kubediscovery.NewCoreClient(c.Kubeconfig)
		if err != nil {
			log.Error("cannot read the pod's zone from its node; routing ignores zones", "error", err)
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		z.cancel = cancel
		l := &zone.Learner{Get: zone.NodeLabels(kubediscovery.NodeLabels(client)), Node: c.NodeName, Label: c.NodeLabel, Log: log}
		go l.Learn(ctx, &z.local)
	}
}

// stopZone ends the node label read, at shutdown.
func (a *App) stopZone() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.zone.cancel != nil {
		a.zone.cancel()
	}
}

// zonePolicy returns the zone-aware routing of cc and counts its picks by
// locality; nil when cc has none.
func (a *App) zonePolicy(cc config.Cluster, obs *upstream.Observer) *upstream.ZonePolicy {
	za := cc.ZoneAware
	if za == nil {
		return nil
	}
	z := &a.zone
	z.once.Do(func() {
		z.requests = metrics.Counter(a.metrics.Registry, "attache_cluster_zone_requests_total",
			"Endpoints picked by zone-aware routing (per connection or request try), by locality: local (the pod's zone) or other.", "cluster", "locality")
	})
	local, other := z.requests.WithLabelValues(cc.Name, "local"), z.requests.WithLabelValues(cc.Name, "other")
	obs.Routed = func(_ *upstream.Endpoint, isLocal bool) {
		if isLocal {
			local.Inc()
		} else {
			other.Inc()
		}
	}
	zp := &upstream.ZonePolicy{Local: z.local.Get, MinHealthy: za.MinHealthy, MinClusterSize: za.MinClusterSize}
	if name := za.Callers; name != "" {
		// Looked up per pick in the generation serving, so that a reload
		// that rebuilds the callers' cluster is followed.
		zp.Callers = func() []*upstream.Endpoint {
			if g := a.gen.Load(); g != nil {
				if rt := g.clusters[name]; rt != nil {
					return rt.up.Endpoints()
				}
			}
			return nil
		}
	}
	return zp
}

// ZoneAwareStatus is a cluster's zone-aware routing in /status.
type ZoneAwareStatus struct {
	// Mode: off (pod zone unknown, cluster too small, panic mode), local
	// (every request to the local zone), split (part of them: the local
	// zone has fewer healthy endpoints than its share of the traffic) or
	// spill (below min_healthy: every zone).
	Mode       string  `json:"mode"`
	SpillOver  bool    `json:"spill_over"` // split or spill: requests leave the zone
	LocalShare float64 `json:"local_share"`
	Hints      bool    `json:"hints,omitempty"`   // the local set is the endpoints hinted for the zone
	Callers    bool    `json:"callers,omitempty"` // shares from the callers cluster's spread
	Reason     string  `json:"reason,omitempty"`
}

func zoneAwareStatus(c *upstream.Cluster) *ZoneAwareStatus {
	st, ok := c.ZoneStatus()
	if !ok {
		return nil
	}
	return &ZoneAwareStatus{Mode: st.Mode.String(), SpillOver: st.Mode == upstream.ZoneSplit || st.Mode == upstream.ZoneSpill,
		LocalShare: st.LocalShare, Hints: st.Hints, Callers: st.Callers, Reason: st.Reason}
}
