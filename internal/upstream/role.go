package upstream

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is what an endpoint's server says it is, learned by a role-aware
// health check (PostgreSQL's pg_is_in_recovery()). It is never taken from
// the order of endpoints in the configuration: a promoted standby becomes
// the primary at its next check.
type Role int32

const (
	// RoleUnknown: not learned yet, the cluster's check does not learn
	// roles, or the endpoint turned unhealthy.
	RoleUnknown Role = iota
	RolePrimary
	RoleStandby
)

// Roles lists every role, for metrics that export one series per role.
var Roles = [...]Role{RoleUnknown, RolePrimary, RoleStandby}

func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleStandby:
		return "standby"
	}
	return "unknown"
}

// Replication is what one check learned about an endpoint's role.
type Replication struct {
	Role Role
	// Lag is how far a standby's replay is behind its primary; 0 for a
	// primary. Meaningful only when LagKnown.
	Lag      time.Duration
	LagKnown bool
}

// lagUnknown is the stored lag of an endpoint whose lag is not known.
const lagUnknown = -1

// ErrNoPrimary is returned by Primary when no endpoint is a primary.
var ErrNoPrimary = errors.New("no primary")

// SplitBrainError is returned by Primary when more than one endpoint's
// latest check found a primary.
type SplitBrainError struct {
	Cluster   string
	Endpoints []string
}

func (e *SplitBrainError) Error() string {
	return fmt.Sprintf("cluster %q: split brain: %d endpoints claim to be primary (%s)", e.Cluster, len(e.Endpoints), strings.Join(e.Endpoints, ", "))
}

// Primaries returns the endpoints whose latest check succeeded and found a
// primary. More than one is a split brain. An endpoint whose latest check
// failed is not counted, even while its health has not flipped yet: during
// a failover the dead primary must not make the promoted one look like a
// split brain.
func (c *Cluster) Primaries() []*Endpoint {
	var ps []*Endpoint
	for _, e := range c.Endpoints() {
		if e.ClaimsPrimary() {
			ps = append(ps, e)
		}
	}
	return ps
}

// SplitBrain returns a *SplitBrainError naming the endpoints when more
// than one claims to be primary, else nil.
func (c *Cluster) SplitBrain() error { return c.splitBrain(c.Primaries()) }

func (c *Cluster) splitBrain(claims []*Endpoint) error {
	if len(claims) < 2 {
		return nil
	}
	err := &SplitBrainError{Cluster: c.opts.Name}
	for _, e := range claims {
		err.Endpoints = append(err.Endpoints, e.Addr)
	}
	return err
}

// Primary returns the endpoint that writes go to: the one endpoint whose
// latest check found a primary; or, while no endpoint's latest check did
// (one lost check), the one routable endpoint last seen as primary, so
// that a transient check failure does not stall writes for an interval.
// It returns a *SplitBrainError when several endpoints claim primary, and
// ErrNoPrimary when none is known. It reads atomics only.
//
// The pooler calls it per transaction: the common case allocates nothing.
func (c *Cluster) Primary() (*Endpoint, error) {
	var claims []*Endpoint
	var claim *Endpoint
	for _, e := range c.Endpoints() {
		if e.ClaimsPrimary() {
			if claim != nil && claims == nil {
				claims = []*Endpoint{claim}
			}
			if claims != nil {
				claims = append(claims, e)
			}
			claim = e
		}
	}
	if claims != nil {
		return nil, c.splitBrain(claims)
	}
	if claim != nil {
		return claim, nil
	}
	var seen *Endpoint
	now := c.opts.Now()
	for _, e := range c.Endpoints() {
		if e.Role() == RolePrimary && c.Routable(e, now) {
			if seen != nil {
				seen = nil // two old primaries and no answer: trust neither
				break
			}
			seen = e
		}
	}
	if seen != nil {
		return seen, nil
	}
	return nil, fmt.Errorf("cluster %q: %w", c.opts.Name, ErrNoPrimary)
}
