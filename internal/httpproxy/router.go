package httpproxy

import (
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/config"
)

// buckets is the resolution of a split: a sticky key hashes to one of
// buckets buckets, and each target owns a contiguous range of them sized by
// its weight. When weights change, only the clients whose bucket changes
// owner move.
const buckets = 10000

// Route is a compiled config.Route.
type Route struct {
	Name    string
	prefix  string
	path    string
	regex   *regexp.Regexp
	host    string
	methods map[string]bool
	headers map[string]string

	targets []target
	sticky  *config.Sticky
	timeout time.Duration
	retry   *retryPolicy
	rewrite *config.Rewrite
	add     map[string]string
	remove  []string
	fast    bool // every target is plain HTTP/1.1: the fast path may serve it
}

type target struct {
	cluster *Cluster
	upto    int                               // exclusive end of this target's bucket range
	rec     func(status int, d time.Duration) // metrics; nil: none
}

// compileRoute builds a Route; clusters resolves names (validated already).
func compileRoute(r config.Route, clusters func(string) *Cluster) *Route {
	rt := &Route{Name: r.Name, prefix: r.Match.Prefix, path: r.Match.Path, host: strings.ToLower(r.Match.Host),
		headers: r.Match.Headers, sticky: r.Sticky, timeout: r.Timeout.D(), rewrite: r.Rewrite}
	if r.Match.Regex != "" {
		rt.regex = regexp.MustCompile("^(?:" + r.Match.Regex + ")$")
	}
	if len(r.Match.Methods) > 0 {
		rt.methods = map[string]bool{}
		for _, m := range r.Match.Methods {
			rt.methods[m] = true
		}
	}
	total := 0
	for _, t := range r.To {
		total += t.Weight
	}
	acc := 0
	for _, t := range r.To {
		acc += t.Weight
		rt.targets = append(rt.targets, target{cluster: clusters(t.Cluster), upto: acc * buckets / total})
	}
	rt.targets[len(rt.targets)-1].upto = buckets
	if r.Retries != nil {
		rt.retry = newRetryPolicy(*r.Retries)
	}
	if h := r.Headers; h != nil {
		rt.add, rt.remove = h.Add, h.Remove
	}
	rt.fast = true
	for _, t := range rt.targets {
		rt.fast = rt.fast && t.cluster.plainHTTP1()
	}
	return rt
}

// matches reports whether a request is for this route.
func (rt *Route) matches(method, p, host string, h headerGetter) bool {
	switch {
	case rt.prefix != "" && !strings.HasPrefix(p, rt.prefix):
		return false
	case rt.path != "" && p != rt.path:
		return false
	case rt.regex != nil && !rt.regex.MatchString(p):
		return false
	case rt.methods != nil && !rt.methods[method]:
		return false
	case rt.host != "" && !hostMatches(rt.host, host):
		return false
	}
	for k, v := range rt.headers {
		if h.Get(k) != v {
			return false
		}
	}
	return true
}

func hostMatches(pattern, host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return host == pattern
}

// pick chooses the route's cluster for req: by the sticky key's bucket, or
// at random in proportion to weight.
func (rt *Route) pick(req *http.Request) *Cluster {
	if len(rt.targets) == 1 {
		return rt.targets[0].cluster
	}
	if rt.sticky != nil {
		return rt.inBucket(int(balance.HashString(stickyKey(rt.sticky, req)) % buckets))
	}
	return rt.inBucket(rand.IntN(buckets))
}

// inBucket is the cluster owning bucket b.
func (rt *Route) inBucket(b int) *Cluster {
	for _, t := range rt.targets {
		if b < t.upto {
			return t.cluster
		}
	}
	return rt.targets[len(rt.targets)-1].cluster
}

// stickyKey is the value a client is kept on one side by; a missing header
// or cookie falls back to the client address, so the client still stays put.
func stickyKey(s *config.Sticky, req *http.Request) string {
	switch s.By {
	case "header":
		if v := req.Header.Get(s.Name); v != "" {
			return "h:" + v
		}
	case "cookie":
		if c, err := req.Cookie(s.Name); err == nil && c.Value != "" {
			return "c:" + c.Value
		}
	}
	return "ip:" + clientIP(req)
}

func clientIP(req *http.Request) string {
	h, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		return req.RemoteAddr
	}
	return h
}

// Table is the routes of one listener, first match wins.
type Table struct {
	Listener string
	Routes   []*Route
}

// NewTable compiles a listener's routes.
func NewTable(l config.Listener, clusters func(string) *Cluster) *Table {
	t := &Table{Listener: l.Name}
	for _, r := range l.Routes {
		t.Routes = append(t.Routes, compileRoute(r, clusters))
	}
	return t
}

func (t *Table) match(req *http.Request) *Route {
	return t.matchFields(req.Method, req.URL.Path, req.Host, req.Header)
}

func (t *Table) matchFields(method, path, host string, h headerGetter) *Route {
	for _, r := range t.Routes {
		if r.matches(method, path, host, h) {
			return r
		}
	}
	return nil
}
