package app

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// resolveTimeout bounds one lookup of a static endpoint's host name.
const resolveTimeout = 2 * time.Second

// resolveState is what the latest lookups of a static cluster's host names
// found, for /ready: a cluster without a health check whose every endpoint
// names a host that does not resolve cannot take traffic, yet nothing else
// would tell. Its methods may be called concurrently.
type resolveState struct {
	hosts []string // the host names of the endpoints (IP literals left out)
	all   bool     // every endpoint names a host

	mu   sync.Mutex
	errs map[string]error // host -> error of its latest lookup; nil entry: resolved
}

// newResolveState returns the state for cc, or nil when lookups would tell
// nothing: a cluster with discovery (its source reports) or a health check
// (it fails on a host that does not resolve), or whose endpoints are not
// all host names.
func newResolveState(cc config.Cluster) *resolveState {
	if cc.Discovery != nil || cc.HealthCheck != nil || len(cc.Endpoints) == 0 {
		return nil
	}
	s := &resolveState{errs: map[string]error{}}
	seen := map[string]bool{}
	for _, e := range cc.Endpoints {
		host, _, err := net.SplitHostPort(e.Address)
		if err != nil || net.ParseIP(host) != nil {
			return nil
		}
		if !seen[host] {
			seen[host] = true
			s.hosts = append(s.hosts, host)
		}
	}
	return s
}

// run looks the host names up at once and then every refresh until ctx
// ends.
func (s *resolveState) run(ctx context.Context, lookup func(context.Context, string) ([]string, error), refresh time.Duration) {
	t := time.NewTicker(refresh)
	defer t.Stop()
	for {
		for _, h := range s.hosts {
			lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
			_, err := lookup(lctx, h)
			cancel()
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			s.errs[h] = err
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// unresolved returns the /ready reason when every host name has been
// looked up and none resolved, or "".
func (s *resolveState) unresolved(cluster string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var failed []string
	for _, h := range s.hosts {
		err, looked := s.errs[h]
		if !looked || err == nil {
			return ""
		}
		failed = append(failed, err.Error())
	}
	sort.Strings(failed)
	return fmt.Sprintf("cluster %q: no endpoint resolves (%s)", cluster, strings.Join(failed, "; "))
}
