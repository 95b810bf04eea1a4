// Package balance chooses one endpoint of a cluster for a new connection or
// request. Each policy is a Picker; all are safe for concurrent use and keep
// only the state their policy needs (a counter, current weights, a ring).
//
// A Picker sees endpoints as Candidates. Unusable candidates (unhealthy,
// ejected, or already tried for this connection) are passed too, so that
// policies that depend on the whole set (ring_hash) stay stable when one
// endpoint goes away.
package balance

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
)

// Candidate is what a policy sees of one endpoint.
type Candidate struct {
	ID     string // stable identity, the endpoint address
	Weight int    // >= 1
	Active int64  // open connections (or requests) right now
	Usable bool
	RTT    *RTT // the endpoint's latency estimate (ewma); nil: never observed
}

// Picker chooses among candidates. Pick returns the index of a usable
// candidate, or -1 when none is usable. key is the connection's hash key
// (the client address hashed); only ring_hash uses it.
type Picker interface {
	Pick(cands []Candidate, key uint64) int
}

// New returns the Picker for a policy name from config.BalancePolicies,
// with its defaults (NewEWMA sets those of ewma).
func New(policy string) (Picker, error) {
	switch policy {
	case "round_robin":
		return &roundRobin{}, nil
	case "weighted":
		return newWeighted(), nil
	case "least_connections", "least_request":
		return &leastConnections{}, nil
	case "random":
		return random{}, nil
	case "p2c":
		return p2c{}, nil
	case "ring_hash":
		return newRingHash(), nil
	case "first":
		return first{}, nil
	case "ewma":
		return NewEWMA(0, 0), nil
	}
	return nil, fmt.Errorf("unknown balance policy %q", policy)
}

var (
	_ Picker = (*roundRobin)(nil)
	_ Picker = (*weighted)(nil)
	_ Picker = (*leastConnections)(nil)
	_ Picker = random{}
	_ Picker = p2c{}
	_ Picker = (*ringHash)(nil)
	_ Picker = first{}
	_ Picker = (*EWMA)(nil)
)

// roundRobin takes usable endpoints in turn, ignoring weights. It counts
// turns among the usable ones only: stepping over the list and taking the
// next usable one would give the endpoint after an unusable one two turns
// (with a primary and two standbys, reads would go 2:1 to one standby).
type roundRobin struct{ next atomic.Uint64 }

func (r *roundRobin) Pick(cands []Candidate, _ uint64) int {
	usable := 0
	for _, c := range cands {
		if c.Usable {
			usable++
		}
	}
	if usable == 0 {
		return -1
	}
	k := int((r.next.Add(1) - 1) % uint64(usable))
	for j, c := range cands {
		if c.Usable {
			if k == 0 {
				return j
			}
			k--
		}
	}
	return -1
}

// leastConnections takes the usable endpoint with the fewest active
// connections per unit of weight. Ties rotate, so that an idle cluster is
// still spread evenly.
type leastConnections struct{ next atomic.Uint64 }

func (l *leastConnections) Pick(cands []Candidate, _ uint64) int {
	n := len(cands)
	if n == 0 {
		return -1
	}
	start := int(l.next.Add(1)-1) % n
	best := -1
	for i := 0; i < n; i++ {
		j := (start + i) % n
		if cands[j].Usable && (best < 0 || less(cands[j], cands[best])) {
			best = j
		}
	}
	return best
}

// less reports whether a is less loaded than b, relative to weight:
// a.Active/a.Weight < b.Active/b.Weight, without division.
func less(a, b Candidate) bool {
	return a.Active*int64(b.Weight) < b.Active*int64(a.Weight)
}

// random takes a usable endpoint at random, in proportion to weight.
type random struct{}

func (random) Pick(cands []Candidate, _ uint64) int {
	total := 0
	for _, c := range cands {
		if c.Usable {
			total += c.Weight
		}
	}
	if total == 0 {
		return -1
	}
	x := rand.IntN(total)
	for i, c := range cands {
		if !c.Usable {
			continue
		}
		if x < c.Weight {
			return i
		}
		x -= c.Weight
	}
	return -1
}

// p2c draws two usable endpoints at random and takes the less loaded: the
// power of two choices, near least-connections quality at O(1).
type p2c struct{}

func (p2c) Pick(cands []Candidate, _ uint64) int {
	usable := make([]int, 0, len(cands))
	for i, c := range cands {
		if c.Usable {
			usable = append(usable, i)
		}
	}
	switch len(usable) {
	case 0:
		return -1
	case 1:
		return usable[0]
	}
	a := rand.IntN(len(usable))
	b := rand.IntN(len(usable) - 1)
	if b >= a {
		b++
	}
	i, j := usable[a], usable[b]
	if less(cands[j], cands[i]) {
		return j
	}
	return i
}

// first takes the first usable endpoint in the order written: primary and
// backups.
type first struct{}

func (first) Pick(cands []Candidate, _ uint64) int {
	for i, c := range cands {
		if c.Usable {
			return i
		}
	}
	return -1
}
