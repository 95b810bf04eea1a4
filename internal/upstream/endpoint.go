package upstream

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
)

// Health is an endpoint's active health-check status.
type Health int32

const (
	// Unknown: not checked yet, or the cluster has no active check.
	Unknown Health = iota
	Healthy
	Unhealthy
)

func (h Health) String() string {
	switch h {
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	}
	return "unknown"
}

// Thresholds are the consecutive check results that flip an endpoint's
// health. The first result after Unknown decides at once.
type Thresholds struct {
	Healthy, Unhealthy int
}

// Endpoint is one backend address and its state: health, ejection, load,
// replication role and lag, and the connections open to it. Its state is
// kept by address when the endpoint set changes (discovery, reload). All
// methods are safe for concurrent use; the data path only reads atomics.
type Endpoint struct {
	Addr   string
	Weight int
	Name   string // as configured (Target.Name); "" for none
	Zone   string // "" when unknown
	Hints  string // Kubernetes topology hints: zones joined by commas

	epoch *atomic.Uint64 // the cluster's (Cluster.Epoch); nil outside one
	// failures counts consecutive failures under a FailurePolicy
	// (twemproxy's failure_count); an atomic so that a success, which
	// comes with every reply, is one load.
	failures atomic.Int32

	health       atomic.Int32
	ejectedUntil atomic.Int64 // unix nanoseconds; 0 when not ejected
	active       atomic.Int64
	role         atomic.Int32 // Role
	lag          atomic.Int64 // nanoseconds; lagUnknown
	claims       atomic.Bool  // the latest check succeeded and found a primary
	rtt          *balance.RTT // latency estimate (balance ewma); shared with a reweighted copy

	mu        sync.Mutex
	passes    int // consecutive successful checks
	fails     int // consecutive failed checks
	connFails int // consecutive connect failures (outlier detection)
	respFails int // consecutive 5xx responses (outlier detection)
	ejections int // times ejected in a row, for the back-off
	conns     map[io.Closer]struct{}
}

// NewEndpoint returns an endpoint of unknown health.
func NewEndpoint(addr string, weight int) *Endpoint {
	e := &Endpoint{Addr: addr, Weight: max(weight, 1), conns: map[io.Closer]struct{}{}, rtt: &balance.RTT{}}
	e.lag.Store(lagUnknown)
	return e
}

func (e *Endpoint) key() string { return endpointKey(e.Addr, e.Name) }

// changed moves the cluster's epoch: the endpoint's health or ejection
// changed.
func (e *Endpoint) changed() {
	if e.epoch != nil {
		e.epoch.Add(1)
	}
}

// EjectedUntil returns when the endpoint's ejection ends; the zero time
// when it was never ejected or a check ended the ejection. A time in the
// past is an ejection that ran out.
func (e *Endpoint) EjectedUntil() time.Time {
	if u := e.ejectedUntil.Load(); u != 0 {
		return time.Unix(0, u)
	}
	return time.Time{}
}

// Health returns the active-check status.
func (e *Endpoint) Health() Health { return Health(e.health.Load()) }

// Ejected reports whether passive outlier detection has ejected the endpoint
// at time now.
func (e *Endpoint) Ejected(now time.Time) bool {
	u := e.ejectedUntil.Load()
	return u != 0 && now.UnixNano() < u
}

// Role returns the role the latest successful check found. It is
// RoleUnknown before the first one and after the endpoint turns unhealthy.
func (e *Endpoint) Role() Role { return Role(e.role.Load()) }

// Lag returns the replication lag the latest successful check found, and
// whether it is known: 0 for a primary; unknown for an endpoint of unknown
// role and for a standby that cannot tell (see docs/postgres-failover.md).
func (e *Endpoint) Lag() (time.Duration, bool) {
	l := e.lag.Load()
	return time.Duration(max(l, 0)), l != lagUnknown
}

// ClaimsPrimary reports whether the endpoint's latest check succeeded and
// found a primary.
func (e *Endpoint) ClaimsPrimary() bool { return e.claims.Load() && e.Role() == RolePrimary }

// ObserveReplication records the role and lag a successful check learned,
// and reports whether the role changed. Call it before ObserveCheck of the
// same check, so that an endpoint turning healthy has its role already.
func (e *Endpoint) ObserveReplication(r Replication) (changed bool) {
	lag := int64(lagUnknown)
	if r.Role == RolePrimary {
		lag = 0
	} else if r.LagKnown {
		lag = int64(max(r.Lag, 0))
	}
	e.lag.Store(lag)
	old := Role(e.role.Swap(int32(r.Role)))
	e.claims.Store(r.Role == RolePrimary)
	return old != r.Role
}

// Active returns the number of connections open to the endpoint.
func (e *Endpoint) Active() int64 { return e.active.Load() }

// ObserveCheck applies one active health-check result and reports whether
// the health changed. When the endpoint turns unhealthy, every connection
// tracked on it is closed, so that clients reconnect to a healthy endpoint
// rather than wait on a dead one. A pass that leaves the endpoint healthy
// ends an outlier ejection at once and resets the consecutive-failure
// counts, as does a turn to healthy (Envoy's
// successful_active_health_check_uneject_host): a backend that came back
// takes traffic again without waiting out base_ejection_time.
func (e *Endpoint) ObserveCheck(ok bool, th Thresholds) (changed bool) {
	e.mu.Lock()
	old := e.Health()
	next := old
	if ok {
		e.passes, e.fails = e.passes+1, 0
		if old == Unknown || old == Unhealthy && e.passes >= th.Healthy {
			next = Healthy
		}
	} else {
		e.passes, e.fails = 0, e.fails+1
		if old == Unknown || old == Healthy && e.fails >= th.Unhealthy {
			next = Unhealthy
		}
		// A server that did not answer claims nothing now; its last
		// known role is still used for routing until it turns unhealthy
		// (see Cluster.Primary), then forgotten: whatever it is when it
		// comes back is learned again.
		e.claims.Store(false)
		if next == Unhealthy {
			e.role.Store(int32(RoleUnknown))
			e.lag.Store(lagUnknown)
		}
	}
	e.health.Store(int32(next))
	moved := next != old
	if ok && next == Healthy && (old != Healthy || e.ejectedUntil.Load() != 0) {
		moved = moved || e.ejectedUntil.Load() != 0
		e.ejectedUntil.Store(0)
		e.connFails, e.respFails = 0, 0
		e.failures.Store(0)
	}
	if moved {
		e.changed()
	}
	var closing []io.Closer
	if next == Unhealthy && old != Unhealthy {
		for c := range e.conns {
			closing = append(closing, c)
		}
	}
	e.mu.Unlock()
	for _, c := range closing {
		c.Close()
	}
	return next != old
}

// Track registers c to be closed if the endpoint turns unhealthy, and counts
// it as active. The returned func undoes both; call it once when c closes.
func (e *Endpoint) Track(c io.Closer) (untrack func()) {
	e.active.Add(1)
	e.mu.Lock()
	e.conns[c] = struct{}{}
	e.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			e.active.Add(-1)
			e.mu.Lock()
			delete(e.conns, c)
			e.mu.Unlock()
		})
	}
}

// connectResult records a connection attempt for outlier detection. It
// reports whether the endpoint was ejected by this failure. allowEject says
// whether the cluster may eject one more endpoint.
func (e *Endpoint) connectResult(ok bool, now time.Time, od OutlierPolicy, allowEject bool) (ejected bool) {
	return e.outlierResult(&e.connFails, od.ConsecutiveFailures, ok, now, od, allowEject)
}

// responseResult is connectResult for HTTP responses (5xx counts).
func (e *Endpoint) responseResult(ok bool, now time.Time, od OutlierPolicy, allowEject bool) (ejected bool) {
	return e.outlierResult(&e.respFails, od.Consecutive5xx, ok, now, od, allowEject)
}

// outlierResult counts consecutive failures in *fails and ejects the
// endpoint when they reach limit. A success resets the count and, once the
// endpoint is back, the ejection back-off.
func (e *Endpoint) outlierResult(fails *int, limit int, ok bool, now time.Time, od OutlierPolicy, allowEject bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ok {
		*fails = 0
		if !e.Ejected(now) {
			e.ejections = 0
		}
		return false
	}
	*fails++
	if *fails < limit || e.Ejected(now) || !allowEject {
		return false
	}
	*fails = 0
	e.eject(now, od)
	return true
}

// eject takes the endpoint out for base_ejection_time times the number of
// ejections in a row, capped. e.mu is held.
func (e *Endpoint) eject(now time.Time, od OutlierPolicy) {
	e.ejections++
	d := od.BaseEjectionTime * time.Duration(e.ejections)
	d = min(d, max(od.BaseEjectionTime, MaxEjectionTime))
	e.ejectedUntil.Store(now.Add(d).UnixNano())
	e.changed()
}

// AddActive counts requests in flight on the endpoint (least_request).
func (e *Endpoint) AddActive(n int64) { e.active.Add(n) }

// copyStateFrom carries health and ejection over from the endpoint of the
// same address in an older endpoint set.
func (e *Endpoint) copyStateFrom(old *Endpoint) {
	old.mu.Lock()
	defer old.mu.Unlock()
	e.health.Store(old.health.Load())
	e.ejectedUntil.Store(old.ejectedUntil.Load())
	e.role.Store(old.role.Load())
	e.lag.Store(old.lag.Load())
	e.claims.Store(old.claims.Load())
	e.rtt = old.rtt
	e.failures.Store(old.failures.Load())
	e.passes, e.fails, e.connFails, e.respFails, e.ejections = old.passes, old.fails, old.connFails, old.respFails, old.ejections
}
