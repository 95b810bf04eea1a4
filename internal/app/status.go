package app

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/protocol"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Ready is true when the configuration is loaded, attache is not draining,
// and every cluster that counts (see ignoredForReady) has at least one
// endpoint that can take traffic: one it knows of (discovery found it, or
// the static list names a host that resolves) that is not ejected and
// passes its health check, if any. The reasons name what is missing; after
// them come notes that do not fail readiness: a discovery source that
// cannot be read while its last known endpoints serve (see
// docs/discovery.md), and what is missing in clusters with ready: ignore,
// so reasons may be non-empty when ok is true.
func (a *App) Ready() (bool, []string) {
	reasons, notes := a.readiness()
	return len(reasons) == 0, append(reasons, notes...)
}

func (a *App) readiness() (reasons, notes []string) {
	if a.draining.Load() {
		reasons = append(reasons, "draining: shutting down")
	}
	g := a.gen.Load()
	if g == nil {
		return append(reasons, "no configuration loaded"), nil
	}
	ignored := ignoredForReady(g.cfg)
	now := time.Now()
	for _, name := range sortedKeys(g.clusters) {
		missing, cnotes := clusterReadiness(name, g.clusters[name], now)
		notes = append(notes, cnotes...)
		if !ignored[name] {
			reasons = append(reasons, missing...)
			continue
		}
		for _, m := range missing {
			notes = append(notes, m+" (ready: ignore)")
		}
	}
	return reasons, notes
}

// clusterReadiness returns what keeps one cluster from taking traffic, and
// notes on a degraded state that still serves.
func clusterReadiness(name string, rt *clusterRT, now time.Time) (missing, notes []string) {
	c := rt.up
	eps := c.Endpoints()
	var note string
	if rt.disc != nil {
		note = rt.disc.note(name, len(eps))
	}
	if len(eps) == 0 {
		if note != "" {
			return []string{note}, nil
		}
		return []string{fmt.Sprintf("cluster %q: no endpoints (discovery has found none yet)", name)}, nil
	}
	if note != "" {
		notes = append(notes, note)
	}
	if rt.names != nil {
		if r := rt.names.unresolved(name); r != "" {
			missing = append(missing, r)
		}
	}
	var states []string
	ok := false
	for _, e := range eps {
		if c.Routable(e, now) {
			ok = true
			break
		}
		states = append(states, e.Addr+" "+endpointState(c, e, now))
	}
	if !ok {
		missing = append(missing, fmt.Sprintf("cluster %q: no healthy endpoint (%s)", name, strings.Join(states, ", ")))
	}
	if err := c.SplitBrain(); err != nil {
		missing = append(missing, err.Error())
	}
	return missing, notes
}

// ignoredForReady returns the clusters /ready leaves out: those with
// ready: ignore, and those every listener that uses them (directly or in
// a route) has ready: ignore. A cluster no listener uses still counts.
func ignoredForReady(cfg *config.Config) map[string]bool {
	required := map[string]bool{}
	used := map[string]bool{}
	for _, l := range cfg.Listeners {
		for _, c := range append(l.Clusters(), l.Cluster) {
			if c == "" {
				continue
			}
			used[c] = true
			if l.Ready != config.ReadyIgnore {
				required[c] = true
			}
		}
	}
	ignored := map[string]bool{}
	for _, cc := range cfg.Clusters {
		ignored[cc.Name] = cc.Ready == config.ReadyIgnore || (used[cc.Name] && !required[cc.Name])
	}
	return ignored
}

func endpointState(c *upstream.Cluster, e *upstream.Endpoint, now time.Time) string {
	switch {
	case e.Ejected(now):
		return "ejected"
	case e.Health() == upstream.Unknown && c.HasHealthCheck():
		return "not checked yet"
	}
	return e.Health().String()
}

// ConfigYAML renders the running configuration with secrets redacted.
func (a *App) ConfigYAML() ([]byte, error) { return a.gen.Load().cfg.MarshalRedacted() }

// Status is the JSON of /status.
type Status struct {
	ConfigFile        string           `json:"config_file,omitempty"`
	LoadedAt          time.Time        `json:"loaded_at"`
	LastReloadError   string           `json:"last_reload_error,omitempty"`
	Ready             bool             `json:"ready"`
	NotReady          []string         `json:"not_ready,omitempty"`
	Notes             []string         `json:"notes,omitempty"` // degraded but ready: a stale discovery source
	Draining          bool             `json:"draining"`
	ActiveConnections int64            `json:"active_connections"`
	Zone              string           `json:"zone,omitempty"` // the pod's, once known
	Listeners         []ListenerStatus `json:"listeners"`
	Clusters          []ClusterStatus  `json:"clusters"`
	Certificates      []CertStatus     `json:"certificates,omitempty"`
	Reloads           []ReloadStatus   `json:"reloads,omitempty"` // newest first
}

// CertStatus is one loaded TLS certificate in /status.
type CertStatus struct {
	Owner    string    `json:"owner"` // "listener NAME" | "cluster NAME"
	File     string    `json:"file"`
	NotAfter time.Time `json:"not_after"`
}

// ReloadStatus is one configuration reload in /status.
type ReloadStatus struct {
	At    time.Time `json:"at"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

// reloadLogSize is how many reloads /status keeps.
const reloadLogSize = 10

// reloadLog keeps the last reloadLogSize reload results.
type reloadLog struct {
	mu   sync.Mutex
	ring []ReloadStatus // oldest first
}

func (l *reloadLog) add(at time.Time, err error) {
	r := ReloadStatus{At: at, OK: err == nil}
	if err != nil {
		r.Error = err.Error()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) == reloadLogSize {
		l.ring = append(l.ring[:0], l.ring[1:]...)
	}
	l.ring = append(l.ring, r)
}

// last returns the kept reloads, newest first.
func (l *reloadLog) last() []ReloadStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ReloadStatus, 0, len(l.ring))
	for i := len(l.ring) - 1; i >= 0; i-- {
		out = append(out, l.ring[i])
	}
	return out
}

// certificates returns the loaded listener and cluster client
// certificates of g, listeners first, in configuration order.
func (g *generation) certificates() []CertStatus {
	var out []CertStatus
	for _, lc := range g.cfg.Listeners {
		if rt := g.listeners[lc.Name]; rt != nil && rt.tls != nil {
			for _, e := range rt.tls.Expiry() {
				out = append(out, CertStatus{Owner: "listener " + lc.Name, File: e.File, NotAfter: e.NotAfter})
			}
		}
	}
	for _, cc := range g.cfg.Clusters {
		if rt := g.clusters[cc.Name]; rt != nil && rt.tls != nil {
			for _, e := range rt.tls.Expiry() {
				out = append(out, CertStatus{Owner: "cluster " + cc.Name, File: e.File, NotAfter: e.NotAfter})
			}
		}
	}
	return out
}

// ListenerStatus is one listener in /status.
type ListenerStatus struct {
	Name              string `json:"name"`
	Address           string `json:"address"`
	Protocol          string `json:"protocol"`
	Cluster           string `json:"cluster"`
	TLS               bool   `json:"tls"`
	ActiveConnections int64  `json:"active_connections"`
	// PeerNames is tls.match_san: the client identities accepted.
	PeerNames []string `json:"match_san,omitempty"`
	// ProtocolStatus is what the listener's protocol shows, written after the
	// fields above (postgres_pools: pgbouncer's SHOW POOLS and SHOW STATS).
	ProtocolStatus protocol.Status `json:"-"`
}

// MarshalJSON writes the fields, then the protocol's.
func (s ListenerStatus) MarshalJSON() ([]byte, error) {
	type fields ListenerStatus
	return joinJSON(fields(s), s.ProtocolStatus, nil)
}

// ClusterStatus is one cluster in /status.
type ClusterStatus struct {
	Name    string `json:"name"`
	Balance string `json:"balance"`
	// ProtocolStatus is what the protocols show of the cluster, written
	// after balance (circuit_breaker: closed | open | half_open;
	// redis_shards).
	ProtocolStatus protocol.Status  `json:"-"`
	Discovery      *DiscoveryStatus `json:"discovery,omitempty"`
	ZoneAware      *ZoneAwareStatus `json:"zone_aware,omitempty"`
	Endpoints      []EndpointStatus `json:"endpoints"`
	// PeerNames is tls.match_san: the server identities accepted.
	PeerNames []string `json:"match_san,omitempty"`
}

// MarshalJSON writes name and balance, the protocols' fields, then the
// rest.
func (s ClusterStatus) MarshalJSON() ([]byte, error) {
	head := struct {
		Name    string `json:"name"`
		Balance string `json:"balance"`
	}{s.Name, s.Balance}
	tail := struct {
		Discovery *DiscoveryStatus `json:"discovery,omitempty"`
		ZoneAware *ZoneAwareStatus `json:"zone_aware,omitempty"`
		Endpoints []EndpointStatus `json:"endpoints"`
		PeerNames []string         `json:"match_san,omitempty"`
	}{s.Discovery, s.ZoneAware, s.Endpoints, s.PeerNames}
	return joinJSON(head, s.ProtocolStatus, tail)
}

// joinJSON writes one JSON object of the fields of head, then those of
// fields, then those of tail (nil: none).
func joinJSON(head any, fields protocol.Status, tail any) ([]byte, error) {
	var parts [][]byte
	for _, v := range []any{head, tail} {
		if v == nil {
			parts = append(parts, nil)
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		parts = append(parts, b[1:len(b)-1]) // {...}
	}
	out := append([]byte{'{'}, parts[0]...)
	for _, f := range fields {
		k, err := json.Marshal(f.Key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(f.Value)
		if err != nil {
			return nil, err
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(append(append(out, k...), ':'), v...)
	}
	if len(parts[1]) > 0 {
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, parts[1]...)
	}
	return append(out, '}'), nil
}

// DiscoveryStatus is a cluster's discovery source in /status.
type DiscoveryStatus struct {
	Source       string     `json:"source"` // dns | consul | file
	Stale        bool       `json:"stale"`  // the latest read failed; the last known endpoints serve
	Error        string     `json:"error,omitempty"`
	FailingSince *time.Time `json:"failing_since,omitempty"`
	LastSuccess  *time.Time `json:"last_success,omitempty"`
}

// EndpointStatus is one endpoint in /status. Role and lag are shown for
// clusters whose check learns them (postgres); the lag only while known.
type EndpointStatus struct {
	Address           string   `json:"address"`
	Name              string   `json:"name,omitempty"` // as configured (a Redis shard's ring name)
	Weight            int      `json:"weight"`
	State             string   `json:"state"`
	Role              string   `json:"role,omitempty"` // unknown | primary | standby
	LagSeconds        *float64 `json:"replication_lag_seconds,omitempty"`
	ActiveConnections int64    `json:"active_connections"`
	// LatencySeconds is the balance ewma estimate, once measured.
	LatencySeconds *float64 `json:"latency_estimate_seconds,omitempty"`
	Zone           string   `json:"zone,omitempty"`
	Hints          string   `json:"hints,omitempty"` // Kubernetes topology hints: zones, comma-separated
}

// Status returns a snapshot of the runtime.
func (a *App) Status() any {
	g := a.gen.Load()
	reasons, notes := a.readiness()
	s := Status{
		ConfigFile:        a.opts.ConfigPath,
		LoadedAt:          g.loadedAt,
		Ready:             len(reasons) == 0,
		NotReady:          reasons,
		Notes:             notes,
		Draining:          a.draining.Load(),
		ActiveConnections: a.pool.Active(),
		Zone:              a.zone.local.Get(),
	}
	if e := a.lastErr.Load(); e != nil {
		s.LastReloadError = *e
	}
	for _, lc := range g.cfg.Listeners {
		ls := ListenerStatus{Name: lc.Name, Address: lc.Address, Protocol: lc.Protocol, Cluster: lc.Cluster, TLS: lc.TLS != nil}
		if lc.TLS != nil {
			ls.PeerNames = peerNames(lc.TLS.MatchSAN)
		}
		if l := a.pool.Get(lc.Address); l != nil {
			ls.ActiveConnections = l.Active()
		}
		if rt := g.listeners[lc.Name]; rt != nil {
			ls.ProtocolStatus = rt.inst.Status()
		}
		s.Listeners = append(s.Listeners, ls)
	}
	now := time.Now()
	for _, cc := range g.cfg.Clusters {
		rt := g.clusters[cc.Name]
		c := rt.up
		cs := ClusterStatus{Name: cc.Name, Balance: cc.Balance, Endpoints: []EndpointStatus{}}
		if cc.TLS != nil {
			cs.PeerNames = peerNames(cc.TLS.MatchSAN)
		}
		for _, p := range a.protocols {
			if inst := rt.proto.Instances[p.Name()]; inst != nil {
				cs.ProtocolStatus = append(cs.ProtocolStatus, inst.Status()...)
			}
		}
		if d := rt.disc; d != nil {
			cs.Discovery = d.status()
		}
		cs.ZoneAware = zoneAwareStatus(c)
		roles := rt.roles
		for _, e := range c.Endpoints() {
			es := EndpointStatus{Address: e.Addr, Name: e.Name, Weight: e.Weight, State: endpointState(c, e, now), ActiveConnections: e.Active(),
				Zone: e.Zone, Hints: e.Hints}
			if d, measured, _ := c.LatencyEstimate(e); measured {
				sec := d.Round(time.Microsecond).Seconds()
				es.LatencySeconds = &sec
			}
			if roles {
				es.Role = e.Role().String()
				if lag, ok := e.Lag(); ok {
					sec := lag.Seconds()
					es.LagSeconds = &sec
				}
			}
			cs.Endpoints = append(cs.Endpoints, es)
		}
		s.Clusters = append(s.Clusters, cs)
	}
	s.Certificates = g.certificates()
	s.Reloads = a.reloads.last()
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// collector reports endpoint state read live at scrape time, so endpoints
// that discovery removed leave no stale series.
type collector struct{ app *App }

var (
	descHealthy = prometheus.NewDesc("attache_cluster_endpoint_healthy",
		"1 if the endpoint takes new connections (passed its checks, or is not checked, and is not ejected).", []string{"cluster", "endpoint"}, nil)
	descEjected = prometheus.NewDesc("attache_cluster_endpoint_ejected",
		"1 while outlier detection has the endpoint ejected.", []string{"cluster", "endpoint"}, nil)
	descActive = prometheus.NewDesc("attache_cluster_endpoint_connections_active",
		"Connections open to the endpoint.", []string{"cluster", "endpoint"}, nil)
	descReady = prometheus.NewDesc("attache_ready", "1 when /ready answers 200.", nil, nil)
	descRole  = prometheus.NewDesc("attache_cluster_endpoint_role",
		"1 for the role the endpoint's latest check found (unknown, primary, standby), 0 for the others; postgres checks only.",
		[]string{"cluster", "endpoint", "role"}, nil)
	descLag = prometheus.NewDesc("attache_postgres_replication_lag_seconds",
		"How far a standby's replay is behind its primary, while known (0 when it has replayed all it received).",
		[]string{"cluster", "endpoint"}, nil)
	descStale = prometheus.NewDesc("attache_discovery_stale",
		"1 while the latest read of the cluster's discovery source failed and its last known endpoints serve.", []string{"cluster", "source"}, nil)
	descSplitBrain = prometheus.NewDesc("attache_cluster_split_brain",
		"1 while more than one endpoint of the cluster claims to be primary; postgres checks only.", []string{"cluster"}, nil)
	descLatency = prometheus.NewDesc("attache_cluster_endpoint_latency_estimate_seconds",
		"The balance ewma latency estimate of the endpoint, once measured: the peak of its recent latencies, decaying.", []string{"cluster", "endpoint"}, nil)
	descCertExpiry = prometheus.NewDesc("attache_tls_certificate_expiry_seconds",
		"Unix time of the NotAfter of a loaded listener or cluster client certificate.", []string{"owner", "file"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHealthy
	ch <- descEjected
	ch <- descActive
	ch <- descReady
	ch <- descRole
	ch <- descLag
	ch <- descSplitBrain
	ch <- descStale
	ch <- descCertExpiry
	ch <- descLatency
	for _, p := range c.app.protocols {
		p.Describe(ch)
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	g := c.app.gen.Load()
	if g == nil {
		return
	}
	now := time.Now()
	for name, rt := range g.clusters {
		for _, inst := range rt.proto.Instances {
			inst.Collect(ch)
		}
		if rt.disc != nil {
			err, _ := rt.disc.failing()
			ch <- prometheus.MustNewConstMetric(descStale, prometheus.GaugeValue, b2f(err != nil), name, rt.disc.source)
		}
		roles := rt.roles
		for _, e := range rt.up.Endpoints() {
			ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, b2f(rt.up.Routable(e, now)), name, e.Addr)
			ch <- prometheus.MustNewConstMetric(descEjected, prometheus.GaugeValue, b2f(e.Ejected(now)), name, e.Addr)
			ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(e.Active()), name, e.Addr)
			if d, measured, _ := rt.up.LatencyEstimate(e); measured {
				ch <- prometheus.MustNewConstMetric(descLatency, prometheus.GaugeValue, d.Seconds(), name, e.Addr)
			}
			if !roles {
				continue
			}
			role := e.Role()
			for _, r := range upstream.Roles {
				ch <- prometheus.MustNewConstMetric(descRole, prometheus.GaugeValue, b2f(r == role), name, e.Addr, r.String())
			}
			if lag, ok := e.Lag(); ok && role == upstream.RoleStandby {
				ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, lag.Seconds(), name, e.Addr)
			}
		}
		if roles {
			ch <- prometheus.MustNewConstMetric(descSplitBrain, prometheus.GaugeValue, b2f(rt.up.SplitBrain() != nil), name)
		}
	}
	for _, rt := range g.listeners {
		rt.inst.Collect(ch)
	}
	for _, cert := range g.certificates() {
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(cert.NotAfter.Unix()), cert.Owner, cert.File)
	}
	ready, _ := c.app.Ready()
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b2f(ready))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
