package pgproxy

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/attache-proxy/attache/internal/upstream"
)

// Target is which servers a listener's transactions (sessions, in session
// mode) run on, in the words of libpq's target_session_attrs. Roles and
// lag are what the cluster's postgres health check learned; they are read
// at every acquire, so a promotion is followed without a reload.
type Target int

const (
	// TargetAny: any routable endpoint, chosen by the cluster's policy;
	// roles are not looked at (the behaviour without a role-aware check).
	TargetAny Target = iota
	// TargetPrimary: the one endpoint whose server says it is the
	// primary. While there is none, clients wait; on a split brain they
	// are refused.
	TargetPrimary
	// TargetStandby: a standby within MaxLag, balanced by the cluster's
	// policy; clients wait while there is none.
	TargetStandby
	// TargetPreferStandby: a standby within MaxLag, else the primary.
	TargetPreferStandby
)

// ParseTarget reads a target as written in the configuration.
func ParseTarget(s string) (Target, error) {
	switch s {
	case "", "any":
		return TargetAny, nil
	case "primary":
		return TargetPrimary, nil
	case "standby":
		return TargetStandby, nil
	case "prefer_standby":
		return TargetPreferStandby, nil
	}
	return 0, fmt.Errorf("unknown target %q", s)
}

func (t Target) String() string {
	return [...]string{"any", "primary", "standby", "prefer_standby"}[t]
}

// waitError says that no endpoint fits the target now: the client waits,
// up to query_wait_timeout, and asks again.
type waitError struct{ why string }

func (e *waitError) Error() string { return e.why }

// routeRetry is how often a waiting client asks again for an endpoint. The
// answer changes at most once per health-check round; a waiting client
// costs one atomic scan of the endpoints per retry.
const routeRetry = 25 * time.Millisecond

// route chooses the endpoint of a client's next server connection: nil
// for TargetAny (Dial chooses), a *waitError when none fits now, a
// *upstream.SplitBrainError when the target needs the primary and two
// endpoints claim it. Standbys at the addresses in avoid (where a connect
// just failed) are passed over while another one fits; the primary, being
// the only one, is not. It reads atomics only.
func (p *Proxy) route(avoid ...string) (*upstream.Endpoint, error) {
	switch p.cfg.Target {
	case TargetPrimary:
		return p.primary()
	case TargetStandby:
		if e := p.standby(avoid); e != nil {
			return e, nil
		}
		if len(avoid) > 0 {
			if e := p.standby(nil); e != nil {
				return e, nil
			}
		}
		return nil, &waitError{p.noStandby()}
	case TargetPreferStandby:
		if e := p.standby(avoid); e != nil {
			return e, nil
		}
		return p.primary()
	}
	return nil, nil
}

func (p *Proxy) primary() (*upstream.Endpoint, error) {
	e, err := p.cfg.Cluster.Primary()
	switch {
	case errors.Is(err, upstream.ErrNoPrimary):
		return nil, &waitError{err.Error()}
	case err == nil && e == nil:
		return nil, &waitError{"no primary"} // never nil, nil: that would mean any endpoint
	}
	return e, err
}

func (p *Proxy) noStandby() string {
	if p.cfg.MaxLag > 0 {
		return fmt.Sprintf("cluster %q: no healthy standby within max_replication_lag %s", p.cfg.Cluster.Name(), p.cfg.MaxLag)
	}
	return fmt.Sprintf("cluster %q: no healthy standby", p.cfg.Cluster.Name())
}

// standby picks an eligible standby by the cluster's balance policy, none
// of those at the addresses in avoid.
func (p *Proxy) standby(avoid []string) *upstream.Endpoint {
	now := time.Now()
	return p.cfg.Cluster.Pick(0, func(e *upstream.Endpoint) bool {
		return !p.eligibleStandby(e, now) || slices.Contains(avoid, e.Addr)
	})
}

// eligibleStandby: a routable standby whose lag is within MaxLag. Unknown
// lag is over any limit (see docs/postgres-failover.md).
func (p *Proxy) eligibleStandby(e *upstream.Endpoint, now time.Time) bool {
	if e.Role() != upstream.RoleStandby || !p.cfg.Cluster.Routable(e, now) {
		return false
	}
	if p.cfg.MaxLag <= 0 {
		return true
	}
	lag, known := e.Lag()
	return known && lag <= p.cfg.MaxLag
}

// eligible reports whether server connections of a route (an endpoint
// address; "" for TargetAny) may still be handed out. Idle ones of a route
// that is not are closed, and one coming back from a client is closed
// rather than pooled: the old primary after a failover, a standby that
// fell behind.
func (p *Proxy) eligible(route string) bool {
	if route == "" || p.cfg.Target == TargetAny {
		return true
	}
	e := p.endpoint(route)
	if e == nil {
		return false // no longer in the cluster
	}
	isPrimary := func() bool {
		pe, err := p.cfg.Cluster.Primary()
		return err == nil && pe.Addr == route
	}
	switch p.cfg.Target {
	case TargetPrimary:
		return isPrimary()
	case TargetStandby:
		return p.eligibleStandby(e, time.Now())
	default: // TargetPreferStandby
		return p.eligibleStandby(e, time.Now()) || isPrimary()
	}
}
