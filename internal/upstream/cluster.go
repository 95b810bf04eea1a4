// Package upstream holds clusters and their endpoints: the endpoint set that
// discovery writes, the health and ejection state that checks write, and
// the Dial that the data path uses to reach one healthy endpoint.
//
// Data flows one way: discovery and health write endpoint state, protocol
// handlers read it through Dial. The endpoint set is an immutable slice
// behind an atomic pointer, so the data path takes no lock to read it.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
)

// MaxEjectionTime caps the growing ejection time of an endpoint that keeps
// failing (Envoy's default max_ejection_time).
const MaxEjectionTime = 300 * time.Second

// OutlierPolicy is passive outlier detection on connect failures.
type OutlierPolicy struct {
	ConsecutiveFailures int
	Consecutive5xx      int // HTTP responses; 0: off
	BaseEjectionTime    time.Duration
	MaxEjectionPercent  int
}

// Target is one endpoint as a discovery source reports it.
type Target struct {
	Addr   string
	Weight int
	// Name is the endpoint's name when the configuration gives one (a
	// Redis shard's ring name: see internal/redisproxy); "" for none.
	Name string
	Zone string // "" when unknown: counts as a zone of its own
	// Hints are Kubernetes topology hints, the zones it serves, sorted
	// and joined by commas (a string keeps Target comparable).
	Hints string
}

// key identifies a target's endpoint across endpoint sets: its address,
// and its name when it has one.
func (t Target) key() string { return endpointKey(t.Addr, t.Name) }

// same reports whether t and e describe the same endpoint.
func (t Target) same(e *Endpoint, w int) bool {
	return e.Weight == w && e.Zone == t.Zone && e.Hints == t.Hints
}

func endpointKey(addr, name string) string {
	if name == "" {
		return addr
	}
	return addr + " " + name
}

// Observer receives the cluster's events for metrics and logs. Any field may
// be nil.
type Observer struct {
	ConnectError func(ep *Endpoint, err error)
	Ejected      func(ep *Endpoint)
	// Routed is told, under zone-aware routing with the pod's zone known,
	// whether each endpoint picked is in the pod's zone.
	Routed func(ep *Endpoint, local bool)
}

// Options configure a Cluster. Zero values are not valid except where noted.
type Options struct {
	Name           string
	Picker         balance.Picker
	ConnectTimeout time.Duration
	Outlier        OutlierPolicy
	HasHealthCheck bool
	// Zone, when set, routes zone-aware (see ZonePolicy).
	Zone *ZonePolicy
	// TLS, when set, originates TLS on every connection: it returns the
	// client configuration to use now (certificates may rotate).
	TLS      func(addr string) *tls.Config
	Dial     func(ctx context.Context, network, addr string) (net.Conn, error) // nil: net.Dialer
	Observer Observer
	Log      *slog.Logger
	Now      func() time.Time // nil: time.Now
}

// Cluster is a named set of endpoints and the way to reach them.
type Cluster struct {
	opts Options
	lat  balance.LatencyObserver // the Picker, when it learns latencies (ewma)
	eps  atomic.Pointer[[]*Endpoint]

	// epoch changes whenever the endpoint set, or an endpoint's health or
	// ejection, changes (see Epoch). Shared with the endpoints, and with
	// the generation that Inherits them.
	epoch *atomic.Uint64

	mu     sync.Mutex // serialises SetEndpoints
	legacy map[string]*Endpoint
	added  chan struct{} // closed when SetEndpoints adds an endpoint; mu

	// Candidate lists for Pick, reused: an HTTP request picks an
	// endpoint per try, and a list per pick was one of the fast path's
	// two allocations per request.
	cands sync.Pool // *[]balance.Candidate
}

// New returns a cluster with no endpoints.
func New(opts Options) *Cluster {
	if opts.Dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		opts.Dial = d.DialContext
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{opts: opts, added: make(chan struct{}), epoch: new(atomic.Uint64)}
	c.lat, _ = opts.Picker.(balance.LatencyObserver)
	c.eps.Store(&[]*Endpoint{})
	return c
}

// Added returns a channel closed the next time SetEndpoints adds an
// endpoint, so that the health checker can check it at once rather than at
// its next round (a discovered endpoint takes no traffic before its first
// check passes).
func (c *Cluster) Added() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.added
}

// Name returns the cluster's name.
func (c *Cluster) Name() string { return c.opts.Name }

// OriginatesTLS reports whether connections to the endpoints are TLS.
func (c *Cluster) OriginatesTLS() bool { return c.opts.TLS != nil }

// HasHealthCheck reports whether endpoints are actively checked.
func (c *Cluster) HasHealthCheck() bool { return c.opts.HasHealthCheck }

// Inherit makes the endpoints of old, an earlier generation of the same
// cluster, the ones SetEndpoints reuses by address: their health, ejection
// and open connections carry over a reload. They are also the endpoint set
// until the first SetEndpoints, so that a reloaded cluster whose discovery
// has not reported yet (a watch being set up, a DNS lookup) serves rather
// than refusing for want of endpoints. Call it before the first
// SetEndpoints.
func (c *Cluster) Inherit(old *Cluster) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.legacy = map[string]*Endpoint{}
	for _, e := range old.Endpoints() {
		c.legacy[e.key()] = e
	}
	c.epoch = old.epoch
	c.eps.Store(old.eps.Load())
}

// Epoch returns a number that changes whenever the endpoint set changes
// or an endpoint's health or ejection does (not when an ejection runs
// out: see Endpoint.EjectedUntil). A reader that derives state from the
// endpoints (a Redis ring) compares it on its fast path, one atomic load,
// and derives again when it moved.
func (c *Cluster) Epoch() uint64 { return c.epoch.Load() }

// Endpoints returns the current endpoint set. The slice must not be changed.
func (c *Cluster) Endpoints() []*Endpoint { return *c.eps.Load() }

// SetEndpoints replaces the endpoint set. Endpoints whose address, name,
// weight, zone and hints are unchanged are kept as they are, with their
// state and connections; a change of weight, zone or hints keeps the
// state. Connections to removed endpoints are left
// open: they end on their own or when the client closes them.
func (c *Cluster) SetEndpoints(ts []Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := map[string]*Endpoint{}
	for k, e := range c.legacy {
		prev[k] = e
	}
	for _, e := range c.Endpoints() {
		prev[e.key()] = e
	}
	next := make([]*Endpoint, 0, len(ts))
	added := false
	for _, t := range ts {
		w := max(t.Weight, 1)
		switch old := prev[t.key()]; {
		case old != nil && t.same(old, w):
			next = append(next, old)
		case old != nil:
			e := c.newEndpoint(t, w)
			e.copyStateFrom(old)
			next = append(next, e)
		default:
			next = append(next, c.newEndpoint(t, w))
			added = true
		}
	}
	c.legacy = nil
	c.eps.Store(&next)
	c.epoch.Add(1)
	if added {
		close(c.added)
		c.added = make(chan struct{})
	}
}

func (c *Cluster) newEndpoint(t Target, weight int) *Endpoint {
	e := NewEndpoint(t.Addr, weight)
	e.Name, e.Zone, e.Hints = t.Name, t.Zone, t.Hints
	e.epoch = c.epoch
	return e
}

// Routable reports whether the data path should send new connections to e
// at time now: healthy (or not actively checked) and not ejected.
func (c *Cluster) Routable(e *Endpoint, now time.Time) bool {
	if e.Ejected(now) {
		return false
	}
	if c.opts.HasHealthCheck {
		return e.Health() == Healthy
	}
	return e.Health() != Unhealthy
}

// ErrNoEndpoints is returned by Dial when the cluster has no endpoints.
var ErrNoEndpoints = errors.New("no endpoints")

// Dial connects to one endpoint chosen by the balance policy, with key as
// the hash key for ring_hash. A failed attempt is retried on the next
// endpoint the policy gives, until every endpoint was tried once, before the
// caller sees an error. When no endpoint is routable, or every routable one
// failed (one that has just gone away, not yet seen by health checks), the
// others are tried too (panic mode: a connection that may fail beats a
// certain refusal).
//
// The caller should Track the connection on the returned endpoint, so that
// it is counted and closed if the endpoint turns unhealthy.
func (c *Cluster) Dial(ctx context.Context, key uint64) (conn net.Conn, ep *Endpoint, err error) {
	eps := c.Endpoints()
	if len(eps) == 0 {
		return nil, nil, fmt.Errorf("cluster %q: %w", c.opts.Name, ErrNoEndpoints)
	}
	cands := c.candidates(eps, nil)
	var errs []error
	tried := make([]bool, len(eps))
	i := c.opts.Picker.Pick(cands, key)
	for tries := 0; i >= 0 && tries < len(eps); tries++ {
		cands[i].Usable = false
		tried[i] = true
		e := eps[i]
		conn, err := c.dialObserved(ctx, e)
		if err == nil {
			if c.opts.Zone != nil {
				c.countLocality(e)
			}
			return conn, e, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
		prev := i
		if i = nextUsable(cands, i); i < 0 && c.opts.Zone != nil {
			// Every endpoint of the zone chosen failed: the routable
			// endpoints of the others come before the unroutable ones.
			cands = c.candidates(eps, func(e *Endpoint) bool { return tried[slices.Index(eps, e)] })
			i = nextUsable(cands, prev)
		}
		if i < 0 {
			i = nextUntried(tried, i)
		}
	}
	return nil, nil, fmt.Errorf("cluster %q: every endpoint failed: %w", c.opts.Name, errors.Join(errs...))
}

// DialEndpoint connects to e, the one endpoint a caller chose (by role,
// say), and feeds outlier detection with the result. Track the connection
// on e, as with Dial.
func (c *Cluster) DialEndpoint(ctx context.Context, e *Endpoint) (net.Conn, error) {
	return c.dialObserved(ctx, e)
}

// Connect connects to e as Dial does (connect_timeout, TLS) and counts a
// failure in the observer's ConnectError, but not in outlier detection:
// for a protocol that keeps its own connections to every endpoint and
// applies its own policy to their failures (a Redis pool's
// FailurePolicy, see RecordFailure).
func (c *Cluster) Connect(ctx context.Context, e *Endpoint) (net.Conn, error) {
	conn, err := c.dialOne(ctx, e)
	if err != nil && c.opts.Observer.ConnectError != nil {
		c.opts.Observer.ConnectError(e, err)
	}
	return conn, err
}

// dialObserved is dialOne feeding outlier detection and, under a policy
// that learns latencies, the endpoint's estimate with the connect time
// (TCP and TLS handshakes). A failure counts as a latency of at least the
// time it took, so a connect timeout makes the endpoint costly and a fast
// refusal does not make it cheap.
func (c *Cluster) dialObserved(ctx context.Context, e *Endpoint) (net.Conn, error) {
	var start time.Time
	if c.lat != nil {
		start = c.opts.Now()
	}
	conn, err := c.dialOne(ctx, e)
	if c.lat != nil && ctx.Err() == nil {
		c.lat.Observe(e.rtt, c.opts.Now().Sub(start), err != nil)
	}
	c.recordConnect(e, err)
	return conn, err
}

// candidates describes eps for the policy. Routable endpoints are usable;
// when none is, all are (panic mode). Endpoints for which skip returns true
// (already tried) are never usable. Panic mode is decided before skip: when
// every routable endpoint was already tried, none is usable (the caller goes
// round the routable ones again) rather than the unhealthy ones, which
// against a host that drops packets would cost a connect timeout each.
func (c *Cluster) candidates(eps []*Endpoint, skip func(*Endpoint) bool) []balance.Candidate {
	return c.fillCandidates(nil, eps, skip)
}

// fillCandidates is candidates into buf's storage when it has room.
func (c *Cluster) fillCandidates(buf []balance.Candidate, eps []*Endpoint, skip func(*Endpoint) bool) []balance.Candidate {
	now := c.opts.Now()
	cands := slices.Grow(buf[:0], len(eps))[:len(eps)]
	anyRoutable := false
	for i, e := range eps {
		r := c.Routable(e, now)
		anyRoutable = anyRoutable || r
		cands[i] = balance.Candidate{ID: e.Addr, Weight: e.Weight, Active: e.Active(), Usable: r && (skip == nil || !skip(e)), RTT: e.rtt}
	}
	if !anyRoutable {
		for i, e := range eps {
			cands[i].Usable = skip == nil || !skip(e)
		}
	} else if c.opts.Zone != nil {
		c.zoneFilter(cands, eps, now)
	}
	return cands
}

// Pick chooses an endpoint for one request without connecting, skipping
// those for which skip returns true (already tried). nil when none is left.
func (c *Cluster) Pick(key uint64, skip func(*Endpoint) bool) *Endpoint {
	eps := c.Endpoints()
	switch len(eps) {
	case 0:
		return nil
	case 1:
		// What candidates and any policy make of one endpoint: it is
		// chosen unless skipped, routable or not (panic mode).
		if skip != nil && skip(eps[0]) {
			return nil
		}
		if c.opts.Zone != nil {
			c.countLocality(eps[0])
		}
		return eps[0]
	}
	bp, _ := c.cands.Get().(*[]balance.Candidate)
	if bp == nil {
		bp = new([]balance.Candidate)
	}
	cands := c.fillCandidates((*bp)[:0], eps, skip)
	i := c.opts.Picker.Pick(cands, key)
	clear(cands) // no IDs kept alive from the pool
	*bp = cands[:0]
	c.cands.Put(bp)
	if i >= 0 {
		if c.opts.Zone != nil {
			c.countLocality(eps[i])
		}
		return eps[i]
	}
	return nil
}

// RecordResponse feeds passive outlier detection with one HTTP response:
// ok false for a 5xx or a failure after the connection was made.
func (c *Cluster) RecordResponse(e *Endpoint, ok bool) {
	if c.opts.Outlier.Consecutive5xx <= 0 {
		return
	}
	now := c.opts.Now()
	allow := !ok && c.mayEject(now)
	if e.responseResult(ok, now, c.opts.Outlier, allow) {
		c.opts.Log.Warn("endpoint ejected after consecutive 5xx responses", "cluster", c.opts.Name, "endpoint", e.Addr)
		if c.opts.Observer.Ejected != nil {
			c.opts.Observer.Ejected(e)
		}
	}
}

// LearnsLatency reports whether the balance policy learns from latencies
// (ewma): then callers that time requests themselves report them with
// ObserveLatency.
func (c *Cluster) LearnsLatency() bool { return c.lat != nil }

// ObserveLatency feeds the balance policy (ewma) with the latency of one
// request to e: d until its answer began, or with failed, d until it
// failed (a lower bound). Nothing when the policy does not learn.
func (c *Cluster) ObserveLatency(e *Endpoint, d time.Duration, failed bool) {
	if c.lat != nil {
		c.lat.Observe(e.rtt, d, failed)
	}
}

// LatencyEstimate returns e's latency estimate under a policy that learns
// latencies, and whether it is a measurement (false: the default RTT the
// policy starts from, or nothing when no pick has seen e yet). ok is false
// under other policies.
func (c *Cluster) LatencyEstimate(e *Endpoint) (d time.Duration, measured, ok bool) {
	if c.lat == nil {
		return 0, false, false
	}
	d, measured = c.lat.Estimate(e.rtt)
	return d, measured, true
}

// RecordConnect feeds outlier detection with a connection attempt made
// outside Dial (HTTP transports dial on their own).
func (c *Cluster) RecordConnect(e *Endpoint, err error) { c.recordConnect(e, err) }

// nextUsable returns the first usable candidate after i in list order, or
// -1. A retry takes the next endpoint rather than asking the policy again:
// asking again would advance round robin twice per connection and, with one
// endpoint down, send every connection to the dead one first.
func nextUsable(cands []balance.Candidate, i int) int {
	for k := 1; k < len(cands); k++ {
		if j := (i + k) % len(cands); cands[j].Usable {
			return j
		}
	}
	return -1
}

// nextUntried returns the first endpoint not tried after i in list order,
// or -1.
func nextUntried(tried []bool, i int) int {
	for k := 1; k <= len(tried); k++ {
		if j := (i + k + len(tried)) % len(tried); !tried[j] {
			return j
		}
	}
	return -1
}

func (c *Cluster) dialOne(ctx context.Context, e *Endpoint) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	conn, err := c.opts.Dial(ctx, "tcp", e.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", e.Addr, err)
	}
	if c.opts.TLS == nil {
		return conn, nil
	}
	tc := tls.Client(conn, c.opts.TLS(e.Addr))
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", e.Addr, err)
	}
	return tc, nil
}

func (c *Cluster) recordConnect(e *Endpoint, err error) {
	now := c.opts.Now()
	if err != nil && c.opts.Observer.ConnectError != nil {
		c.opts.Observer.ConnectError(e, err)
	}
	allow := false
	if err != nil {
		allow = c.mayEject(now)
	}
	if e.connectResult(err == nil, now, c.opts.Outlier, allow) {
		c.opts.Log.Warn("endpoint ejected after consecutive connect failures",
			"cluster", c.opts.Name, "endpoint", e.Addr, "error", err)
		if c.opts.Observer.Ejected != nil {
			c.opts.Observer.Ejected(e)
		}
	}
}

// mayEject reports whether one more endpoint may be ejected without passing
// max_ejection_percent. One endpoint may always be ejected when the percent
// is above zero, so that small clusters still shed a dead endpoint.
func (c *Cluster) mayEject(now time.Time) bool {
	pct := c.opts.Outlier.MaxEjectionPercent
	if pct <= 0 || c.opts.Outlier.ConsecutiveFailures <= 0 {
		return false
	}
	eps := c.Endpoints()
	ejected := 0
	for _, e := range eps {
		if e.Ejected(now) {
			ejected++
		}
	}
	limit := max(1, len(eps)*pct/100)
	return ejected < limit
}
