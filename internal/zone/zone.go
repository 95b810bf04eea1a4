// Package zone knows the pod's zone, for zone-aware routing: written in
// the configuration, taken from an environment variable (the downward API),
// or read from a label of the Node the pod runs on.
//
// A node label is read in the background, retried with back-off until it
// is found: until then the zone is unknown and clusters route as if they
// had no zones, so that a slow or failing API server delays zone routing
// but never traffic.
package zone

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Local is the pod's zone. The zero value is an unknown zone. Its methods
// may be called concurrently; Get takes no lock.
type Local struct {
	v atomic.Pointer[string]
}

// Get returns the zone, or "" while it is unknown.
func (l *Local) Get() string {
	if p := l.v.Load(); p != nil {
		return *p
	}
	return ""
}

// Set sets the zone; "" makes it unknown.
func (l *Local) Set(z string) { l.v.Store(&z) }

// NodeLabels reads the labels of a Node (kubernetes.NodeLabels in
// production).
type NodeLabels func(ctx context.Context, node string) (map[string]string, error)

// Learner reads the pod's zone from a label of its Node.
type Learner struct {
	Get   NodeLabels
	Node  string // the node's name (spec.nodeName through the downward API)
	Label string // topology.kubernetes.io/zone
	Log   *slog.Logger
	// Backoff bounds the wait between attempts; 0: 1s and 5m.
	BackoffBase, BackoffMax time.Duration
}

// Learn reads the label until it is found, then sets l, or until ctx ends.
// A failed read and a node without the label are retried with a growing,
// jittered wait (the label may be added later: a node is labelled by its
// cloud controller after it registers).
func (n *Learner) Learn(ctx context.Context, l *Local) error {
	base, ceiling := n.BackoffBase, n.BackoffMax
	if base <= 0 {
		base = time.Second
	}
	if ceiling <= 0 {
		ceiling = 5 * time.Minute
	}
	for attempt := 1; ; attempt++ {
		z, err := n.read(ctx)
		if err == nil {
			l.Set(z)
			n.Log.Info("pod zone learned from its node", "node", n.Node, "label", n.Label, "zone", z)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := backoff(attempt, base, ceiling)
		n.Log.Warn("cannot learn the pod's zone; routing ignores zones until it is known", "error", err, "retry_in", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (n *Learner) read(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	labels, err := n.Get(ctx, n.Node)
	if err != nil {
		return "", err
	}
	z, ok := labels[n.Label]
	if !ok || z == "" {
		return "", fmt.Errorf("node %s has no label %s", n.Node, n.Label)
	}
	return z, nil
}

// backoff is the wait after the n-th failure: base doubled up to ceiling,
// half fixed and half random.
func backoff(n int, base, ceiling time.Duration) time.Duration {
	d := ceiling
	if n < 32 && base<<(n-1) < ceiling && base<<(n-1) > 0 {
		d = base << (n - 1)
	}
	return d/2 + rand.N(d/2+1)
}
