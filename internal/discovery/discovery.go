// Package discovery produces the endpoint set of a cluster from one source:
// a static list, DNS (A/AAAA or SRV), Consul, or a watched file. A source
// only ever writes endpoint sets; it knows nothing of health or the data
// path. Every source keeps its last known set while it cannot be read, and
// tells its Report func about each success and failure.
package discovery

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/attache-proxy/attache/internal/upstream"
)

// Discoverer reports endpoint sets until ctx ends. update is called with the
// first set as soon as it is known and again whenever the set changes; it is
// never called concurrently.
type Discoverer interface {
	Run(ctx context.Context, update func([]upstream.Target))
}

// Static is a fixed endpoint list.
type Static []upstream.Target

// Run reports the list once.
func (s Static) Run(_ context.Context, update func([]upstream.Target)) { update(s) }

// Resolver is the part of *net.Resolver that DNS uses.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

// DNS resolves a name every Refresh. With SRV set, it looks up the SRV
// record (a full name such as _redis._tcp.redis.svc.cluster.local) and
// resolves each target, taking port and weight from the record; otherwise it
// resolves Name's A and AAAA records and uses Port. On a lookup error the
// last known set is kept: a DNS hiccup must not empty a cluster.
type DNS struct {
	Name     string
	Port     int
	SRV      string
	Refresh  time.Duration
	Resolver Resolver
	Log      *slog.Logger
	Report   func(error) // told nil after each good lookup and the error after each failed one; may be nil
}

// Run polls DNS until ctx ends.
func (d *DNS) Run(ctx context.Context, update func([]upstream.Target)) {
	var last []upstream.Target
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lctx, cancel := context.WithTimeout(ctx, max(d.Refresh, 2*time.Second))
		ts, err := d.lookup(lctx)
		cancel()
		if d.Report != nil && ctx.Err() == nil {
			d.Report(err)
		}
		switch {
		case err != nil:
			if ctx.Err() == nil {
				d.Log.Warn("dns discovery failed; keeping the last endpoints", "name", d.Name+d.SRV, "error", err, "kept", len(last))
			}
		case last == nil || !slices.Equal(ts, last):
			d.Log.Info("dns discovery", "name", d.Name+d.SRV, "endpoints", len(ts))
			last = ts
			update(ts)
		}
		t.Reset(d.Refresh)
	}
}

func (d *DNS) lookup(ctx context.Context) ([]upstream.Target, error) {
	var ts []upstream.Target
	if d.SRV == "" {
		ips, err := d.Resolver.LookupHost(ctx, d.Name)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			ts = append(ts, upstream.Target{Addr: net.JoinHostPort(ip, strconv.Itoa(d.Port)), Weight: 1})
		}
	} else {
		_, srvs, err := d.Resolver.LookupSRV(ctx, "", "", d.SRV)
		if err != nil {
			return nil, err
		}
		for _, s := range srvs {
			ips, err := d.Resolver.LookupHost(ctx, s.Target)
			if err != nil {
				return nil, err
			}
			for _, ip := range ips {
				ts = append(ts, upstream.Target{Addr: net.JoinHostPort(ip, strconv.Itoa(int(s.Port))), Weight: max(int(s.Weight), 1)})
			}
		}
	}
	slices.SortFunc(ts, func(a, b upstream.Target) int {
		if a.Addr < b.Addr {
			return -1
		} else if a.Addr > b.Addr {
			return 1
		}
		return 0
	})
	ts = slices.Compact(ts)
	return ts, nil
}
