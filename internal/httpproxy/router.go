package httpproxy

import (
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/httpcache"
)

// buckets is the resolution of a split: a sticky key hashes to one of
// buckets buckets, and each target owns a contiguous range of them sized by
// its weight. When weights change, only the clients whose bucket changes
// owner move.
const buckets = 10000

// compiledRoute is a compiled Route.
type compiledRoute struct {
	Name    string
	prefix  string
	path    string
	regex   *regexp.Regexp
	host    string
	methods map[string]bool
	headers map[string]string

	targets []target
	sticky  *stickiness // nil: a random bucket per request
	timeout time.Duration
	retry   *retryPolicy
	rewrite *Rewrite
	add     map[string]string
	remove  []string
	fast    bool        // every target is plain HTTP/1.1: the fast path may serve it
	jwt     *routeJWT   // nil: no token check
	limit   *routeLimit // rate_limit; nil: none
	grpc    *transcoder // JSON-to-gRPC transcoding; nil: none

	cache    *httpcache.Cache // nil: none (cache.go)
	cacheCfg *RouteCache      // what cache was built from
}

type target struct {
	cluster *Cluster
	upto    int                               // exclusive end of this target's bucket range
	rec     func(status int, d time.Duration) // metrics; nil: none
}

// compileRoute builds a Route; clusters resolves names (validated already).
func compileRoute(r Route, clusters func(string) *Cluster) *compiledRoute {
	rt := &compiledRoute{Name: r.Name, prefix: r.Match.Prefix, path: r.Match.Path, host: strings.ToLower(r.Match.Host),
		headers: r.Match.Headers, sticky: compileSticky(r.Sticky), timeout: r.Timeout.D(), rewrite: r.Rewrite,
		limit: compileLimit(r.Name, r.RateLimit)}
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
	rt.fast = rt.limit.fast()
	for _, t := range rt.targets {
		rt.fast = rt.fast && t.cluster.plainHTTP1() && t.cluster.opts.RateLimit == nil
	}
	if r.Cache != nil { // served by net/http, handed off by the fast paths
		rt.cache, rt.cacheCfg, rt.fast = newRouteCache(r.Cache), r.Cache, false
	}
	return rt
}

// matches reports whether a request is for this route.
func (rt *compiledRoute) matches(method, p, host string, h headerGetter) bool {
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
func (rt *compiledRoute) pick(req *http.Request) *Cluster {
	if len(rt.targets) == 1 {
		return rt.targets[0].cluster
	}
	s := rt.sticky
	if s == nil {
		return rt.inBucket(rand.IntN(buckets))
	}
	switch s.by {
	case "header":
		if v := req.Header.Get(s.name); v != "" {
			return rt.inBucket(int(s.counted(keyHeader, hashKey("h:", v)) % buckets))
		}
	case "cookie":
		if c, err := req.Cookie(s.name); err == nil && c.Value != "" {
			return rt.inBucket(int(s.counted(keyCookie, hashKey("c:", c.Value)) % buckets))
		}
	}
	return rt.inBucket(int(s.userHash(peerAddr(req.RemoteAddr), req.Header.Values(s.trust.header)) % buckets))
}

// inBucket is the cluster owning bucket b.
func (rt *compiledRoute) inBucket(b int) *Cluster {
	for _, t := range rt.targets {
		if b < t.upto {
			return t.cluster
		}
	}
	return rt.targets[len(rt.targets)-1].cluster
}

// stickiness is a compiled Sticky: what keeps a client on one
// side of a split. The key is a header or a cookie (by: header, cookie)
// when the request has it, else the end user's address (trust.endUser),
// else, for a request whose only identity is the application's loopback
// address, the pod's own key: every request of a pod then lands on one
// side, and pods spread over the split by their keys, rather than every
// pod on the side loopback hashes to.
type stickiness struct {
	by, name string
	trust    trust
	pod      uint64 // hash of the pod's key
	cfg      *Sticky
	// counts are the metrics of the keys requests took, by stickyKeys
	// index; nil entries: none (Observer.Sticky, bound by NewHandler).
	counts [len(stickyKeys)]func()
}

// stickyKeys are what a sticky request was keyed on, the key label of
// the sticky metric.
var stickyKeys = [...]string{"header", "cookie", "client_ip", "pod"}

const (
	keyHeader = iota
	keyCookie
	keyClientIP
	keyPod
)

// counted returns h after counting a request keyed on key.
func (s *stickiness) counted(key int, h uint64) uint64 {
	if c := s.counts[key]; c != nil {
		c()
	}
	return h
}

func compileSticky(s *Sticky) *stickiness {
	if s == nil {
		return nil
	}
	st := &stickiness{by: s.By, name: s.Name, pod: podHash(s.PodKey), cfg: s,
		trust: trust{header: http.CanonicalHeaderKey(s.ForwardedHeader), forwarded: strings.EqualFold(s.ForwardedHeader, "forwarded")}}
	for _, c := range s.TrustedProxies {
		st.trust.proxies = append(st.trust.proxies, c.Prefix())
	}
	return st
}

// stickyStatus is a sticky split in a listener's /status.
type stickyStatus struct {
	Route           string   `json:"route"`
	By              string   `json:"by"`
	Name            string   `json:"name,omitempty"`
	ForwardedHeader string   `json:"forwarded_header"`
	TrustedProxies  []string `json:"trusted_proxies"`
	PodKey          string   `json:"pod_key"`
}

func (s *stickiness) status(route string) stickyStatus {
	st := stickyStatus{Route: route, By: s.by, Name: s.name, ForwardedHeader: s.cfg.ForwardedHeader, PodKey: s.cfg.PodKey, TrustedProxies: []string{}}
	for _, p := range s.trust.proxies {
		st.TrustedProxies = append(st.TrustedProxies, p.String())
	}
	return st
}

// podHash is the sticky hash of a pod's key.
func podHash(key string) uint64 { return hashKey("pod:", key) }

// userHash is the sticky hash of a request from peer without a sticky
// header or cookie, whose forwarded header has the values lines: its end
// user's address, or the pod's key when that is loopback.
func (s *stickiness) userHash(peer netip.Addr, lines []string) uint64 {
	a := s.trust.endUser(peer, lines)
	if !a.IsValid() || a.IsLoopback() {
		return s.counted(keyPod, s.pod)
	}
	var buf [64]byte
	return s.counted(keyClientIP, hashBytes("ip:", a.AppendTo(buf[:0])))
}

// peerAddr is the address of a RemoteAddr; invalid when it has none.
func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr()
	}
	a, _ := netip.ParseAddr(remote)
	return a
}

// hashKey is balance.HashString(prefix + s), without building the string.
func hashKey(prefix, s string) uint64 {
	return mix64(fnv64a(fnv64a(fnvOffset, prefix), s))
}

// hashBytes is hashKey for a key held in bytes.
func hashBytes(prefix string, b []byte) uint64 {
	h := fnv64a(fnvOffset, prefix)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return mix64(h)
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv64a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix64 is balance.HashString's splitmix64 finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
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
	Routes   []*compiledRoute
}

// NewTable compiles a listener's routes.
func NewTable(l config.Listener, clusters func(string) *Cluster) *Table {
	t := &Table{Listener: l.Name}
	for _, r := range Options(&l).Routes {
		t.Routes = append(t.Routes, compileRoute(r, clusters))
	}
	return t
}

func (t *Table) match(req *http.Request) *compiledRoute {
	return t.matchFields(req.Method, req.URL.Path, req.Host, req.Header)
}

func (t *Table) matchFields(method, path, host string, h headerGetter) *compiledRoute {
	for _, r := range t.Routes {
		if r.matches(method, path, host, h) {
			return r
		}
	}
	return nil
}
