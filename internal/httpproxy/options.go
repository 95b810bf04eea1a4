package httpproxy

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// ListenerOptions are listeners[].http: how an http listener routes its
// clients' requests. The keys were once the listener's own (routes,
// access_log, jwt_providers); they are still accepted there (Aliases).
type ListenerOptions struct {
	Routes    []Route `yaml:"routes"`
	AccessLog string  `yaml:"access_log"` // off | text | json (to stdout)
	// JWTProviders are the token issuers the routes' jwt blocks name.
	JWTProviders []JWTProvider `yaml:"jwt_providers"`
}

// Route sends matching HTTP requests to one or more weighted clusters.
type Route struct {
	Name    string          `yaml:"name"`
	Match   RouteMatch      `yaml:"match"`
	To      []RouteTarget   `yaml:"to"`
	Sticky  *Sticky         `yaml:"sticky"`
	Timeout config.Duration `yaml:"timeout"` // until response headers, all tries included
	Retries *Retries        `yaml:"retries"`
	Rewrite *Rewrite        `yaml:"rewrite"`
	Headers *HeaderOps      `yaml:"headers"`
	JWT     *RouteJWT       `yaml:"jwt"`   // nil: no token check
	Cache   *RouteCache     `yaml:"cache"` // options_cache.go
	// RateLimit limits the route's requests (options_ratelimit.go); nil: none.
	RateLimit *RateLimit `yaml:"rate_limit"`
	// GRPCTranscode maps JSON requests to gRPC calls; nil: none.
	GRPCTranscode *GRPCTranscode `yaml:"grpc_transcode"`
}

// RouteMatch selects requests; every field given must match.
type RouteMatch struct {
	Prefix  string            `yaml:"prefix"`
	Path    string            `yaml:"path"`  // exact
	Regex   string            `yaml:"regex"` // on the path, anchored
	Host    string            `yaml:"host"`  // exact, or "*.example.com"
	Methods []string          `yaml:"methods"`
	Headers map[string]string `yaml:"headers" secret:"true"` // exact values
}

// RouteTarget is one cluster of a split.
type RouteTarget struct {
	Cluster string `yaml:"cluster"`
	Weight  int    `yaml:"weight"`
}

// Sticky keeps a client on one side of a split.
type Sticky struct {
	By   string `yaml:"by"`   // client_ip | header | cookie
	Name string `yaml:"name"` // header or cookie name
	// TrustedProxies are the hops trusted to name the end user in
	// ForwardedHeader; nil: loopback (the application, as a sidecar's only
	// peer), empty: none (the peer is the end user).
	TrustedProxies []config.CIDR `yaml:"trusted_proxies"`
	// ForwardedHeader names the end user: x-forwarded-for (the default),
	// forwarded (RFC 7239), or another list of addresses such as x-real-ip.
	ForwardedHeader string `yaml:"forwarded_header"`
	// PodKey is the key of a request with no user identity; default: the
	// POD_NAME environment variable, else the host name.
	PodKey string `yaml:"pod_key"`
}

// DefaultTrustedProxies are the trusted proxies of a sticky split by
// default: loopback, where the application calls from.
func DefaultTrustedProxies() []config.CIDR { return []config.CIDR{"127.0.0.0/8", "::1/128"} }

// DefaultForwardedHeader is where a sticky split reads the end user.
const DefaultForwardedHeader = "x-forwarded-for"

// DefaultRouteTimeout is a route's timeout until response headers.
const DefaultRouteTimeout = 15 * time.Second

// Retries is a route's retry policy.
type Retries struct {
	Attempts      int             `yaml:"attempts"` // tries in all, the first included
	On            []string        `yaml:"on"`       // 5xx | gateway_error | connect_failure | reset | retriable_4xx | a status code
	PerTryTimeout config.Duration `yaml:"per_try_timeout"`
	Backoff       Backoff         `yaml:"backoff"`
	BudgetPercent int             `yaml:"budget_percent"`
	// NonIdempotent opts POST and PATCH in; their body must fit MaxBuffer.
	NonIdempotent bool `yaml:"non_idempotent"`
	MaxBuffer     int  `yaml:"max_buffer_bytes"`
}

// Backoff is jittered exponential backoff between tries.
type Backoff struct {
	Base config.Duration `yaml:"base"`
	Max  config.Duration `yaml:"max"`
}

// Rewrite changes the request on its way upstream.
type Rewrite struct {
	Host   string `yaml:"host"`
	Prefix string `yaml:"prefix"` // replaces the matched prefix
}

// HeaderOps adds and removes request headers.
type HeaderOps struct {
	Add    map[string]string `yaml:"add" secret:"true"`
	Remove []string          `yaml:"remove"`
}

// The names the options accept.
var (
	RetryOn    = []string{"5xx", "gateway_error", "connect_failure", "reset", "retriable_4xx"}
	stickyBy   = []string{"client_ip", "header", "cookie"}
	accessLogs = []string{"off", "text", "json"}
)

// ListenerOptions returns a new listeners[].http.
func (*Protocol) ListenerOptions() any { return &ListenerOptions{} }

// Aliases are the keys of listeners[].http and clusters[].http that were
// the listener's or the cluster's own.
func (*Protocol) Aliases() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"routes", "access_log", "jwt_providers"} {
		m["listeners[]."+k] = "listeners[].http." + k
	}
	clusterAliases(m)
	return m
}

// Options are the http options of a listener of protocol http (filled in
// by config.Parse); the empty options for any other listener.
func Options(l *config.Listener) *ListenerOptions {
	if o, ok := l.Options["http"].(*ListenerOptions); ok {
		return o
	}
	return &ListenerOptions{}
}

// Clusters are the clusters the listener sends to: its routes' and those
// its JWT keys are fetched from.
func (o *ListenerOptions) Clusters() []string {
	var out []string
	for _, r := range o.Routes {
		for _, t := range r.To {
			out = append(out, t.Cluster)
		}
	}
	for _, j := range o.JWTProviders {
		if j.JWKS.Cluster != "" {
			out = append(out, j.JWKS.Cluster) // its keys are fetched over HTTP
		}
	}
	return out
}

// Default fills in the defaults: `cluster:` alone on an http listener is
// one catch-all route.
func (o *ListenerOptions) Default(c *config.Check) {
	l := c.Listener
	if o.AccessLog == "" {
		o.AccessLog = "off"
	}
	if len(o.Routes) == 0 && l.Cluster != "" {
		o.Routes = []Route{{Match: RouteMatch{Prefix: "/"}, To: []RouteTarget{{Cluster: l.Cluster}}}}
	}
	for i := range o.Routes {
		r := &o.Routes[i]
		rp := fmt.Sprintf("%s.routes[%d]", c.Path, i)
		if r.Name == "" {
			r.Name = fmt.Sprintf("%s/%d", l.Name, i)
		}
		for j := range r.To {
			if r.To[j].Weight == 0 {
				r.To[j].Weight = 1
			}
		}
		if r.Timeout == 0 {
			r.Timeout = config.Duration(DefaultRouteTimeout)
		}
		if g := r.GRPCTranscode; g != nil {
			g.applyDefaults()
		}
		if rt := r.Retries; rt != nil {
			if rt.Attempts == 0 {
				rt.Attempts = 2
			}
			if len(rt.On) == 0 {
				rt.On = []string{"connect_failure", "reset", "5xx"}
			}
			if rt.Backoff.Base == 0 {
				rt.Backoff.Base = config.Duration(25 * time.Millisecond)
			}
			if rt.Backoff.Max == 0 {
				rt.Backoff.Max = config.Duration(10 * rt.Backoff.Base.D())
			}
			if rt.BudgetPercent == 0 {
				rt.BudgetPercent = 20
			}
			if rt.MaxBuffer == 0 {
				rt.MaxBuffer = 64 << 10
			}
		}
		if s := r.Sticky; s != nil {
			applySticky(c, rp+".sticky", s, os.Hostname)
		}
		if rc := r.Cache; rc != nil {
			applyCache(c, rp+".cache", rc)
		}
		if rl := r.RateLimit; rl != nil {
			applyRateLimit(c, rp+".rate_limit", rl)
		}
	}
	o.applyJWTDefaults(c)
}

// Validate checks the routes, their clusters and what they add to the
// requests they send upstream.
func (o *ListenerOptions) Validate(c *config.Check) {
	p := c.Path
	l := c.Listener
	c.OneOf(p+".access_log", "access log format", o.AccessLog, accessLogs)
	o.validateJWT(c)
	if len(o.Routes) == 0 {
		c.Errorf(p+".routes", "an http listener needs routes (or cluster for one catch-all route)")
	}
	if l.Cluster != "" && !routesTo(o.Routes, l.Cluster) {
		c.Errorf(c.Parent+".cluster", "not used when routes are given (cluster alone is one catch-all route); remove it or the routes")
	}
	for i := range o.Routes {
		validateRoute(c, fmt.Sprintf("%s.routes[%d]", p, i), &o.Routes[i])
	}
}

func validateRoute(c *config.Check, rp string, r *Route) {
	m := r.Match
	n := 0
	for _, s := range []string{m.Prefix, m.Path, m.Regex} {
		if s != "" {
			n++
		}
	}
	switch {
	case n == 0:
		c.Errorf(rp+".match", "needs one of prefix, path or regex")
	case n > 1:
		c.Errorf(rp+".match", "give only one of prefix, path or regex")
	}
	for _, f := range []struct{ name, val string }{{"prefix", m.Prefix}, {"path", m.Path}} {
		if f.val != "" && !strings.HasPrefix(f.val, "/") {
			c.Errorf(rp+".match."+f.name, "must start with /")
		}
	}
	if m.Regex != "" {
		if _, err := regexp.Compile("^(?:" + m.Regex + ")$"); err != nil {
			c.Errorf(rp+".match.regex", "%v", err)
		}
	}
	for j, meth := range m.Methods {
		if !config.ValidHeaderName(meth) || strings.ToUpper(meth) != meth {
			c.Errorf(fmt.Sprintf("%s.match.methods[%d]", rp, j), "%q: want an upper-case method like GET", meth)
		}
	}
	for h := range m.Headers {
		if !config.ValidHeaderName(h) {
			c.Errorf(rp+".match.headers."+h, "invalid header name")
		}
	}
	if len(r.To) == 0 {
		c.Errorf(rp+".to", "needs at least one cluster")
	}
	for j, t := range r.To {
		tp := fmt.Sprintf("%s.to[%d]", rp, j)
		c.ClusterRef(tp+".cluster", t.Cluster)
		if t.Weight < 1 || t.Weight > 10000 {
			c.Errorf(tp+".weight", "must be 1-10000")
		}
	}
	if s := r.Sticky; s != nil {
		validateSticky(c, rp+".sticky", s)
		if s.By == "client_ip" && s.Name != "" {
			c.Errorf(rp+".sticky.name", "not used with by: client_ip")
		}
		if len(r.To) == 1 {
			c.Errorf(rp+".sticky", "not used by a route to one cluster (it keeps a client on one side of a split)")
		}
	}
	if rl := r.RateLimit; rl != nil {
		validateRateLimit(c, rp+".rate_limit", rl)
	}
	if rc := r.Cache; rc != nil {
		validateCache(c, rp+".cache", rc)
	}
	if r.Timeout < 0 {
		c.Errorf(rp+".timeout", "must not be negative")
	}
	if rt := r.Retries; rt != nil {
		rtp := rp + ".retries"
		if rt.Attempts < 1 || rt.Attempts > 10 {
			c.Errorf(rtp+".attempts", "must be 1-10 (tries in all, the first included)")
		}
		for j, on := range rt.On {
			if code, err := strconv.Atoi(on); err == nil && code >= 400 && code <= 599 {
				continue
			}
			c.OneOf(fmt.Sprintf("%s.on[%d]", rtp, j), "retry condition", on, RetryOn)
		}
		if rt.PerTryTimeout < 0 {
			c.Errorf(rtp+".per_try_timeout", "must not be negative")
		} else if r.Timeout > 0 && rt.PerTryTimeout > r.Timeout {
			c.Errorf(rtp+".per_try_timeout", "must not be longer than the route timeout (%s)", r.Timeout.D())
		}
		if rt.Backoff.Base <= 0 || rt.Backoff.Max < rt.Backoff.Base {
			c.Errorf(rtp+".backoff", "needs 0 < base <= max")
		}
		if rt.BudgetPercent < 1 || rt.BudgetPercent > 100 {
			c.Errorf(rtp+".budget_percent", "must be 1-100")
		}
		if rt.MaxBuffer < 1 {
			c.Errorf(rtp+".max_buffer_bytes", "must be positive")
		}
	}
	if r.GRPCTranscode != nil {
		validateTranscode(c, rp, r)
	}
	if rw := r.Rewrite; rw != nil && rw.Prefix != "" && !strings.HasPrefix(rw.Prefix, "/") {
		c.Errorf(rp+".rewrite.prefix", "must start with /")
	}
	if h := r.Headers; h != nil {
		for k := range h.Add {
			if !config.ValidHeaderName(k) {
				c.Errorf(rp+".headers.add."+k, "invalid header name")
			}
		}
		for j, k := range h.Remove {
			if !config.ValidHeaderName(k) {
				c.Errorf(fmt.Sprintf("%s.headers.remove[%d]", rp, j), "invalid header name %q", k)
			}
		}
	}
	routeWire(c, rp, r)
}

// routeWire checks what a route adds to the requests it sends upstream:
// a byte that ends a header line there would let the file inject a second
// header or request.
func routeWire(c *config.Check, rp string, r *Route) {
	if h := r.Headers; h != nil {
		for name, val := range h.Add {
			if !config.ValidHeaderValue(val) {
				// The value is not quoted: header values are redacted in /config.
				c.Errorf(rp+".headers.add."+name, "the value holds a line break, NUL or another control character (RFC 9110 5.5)")
			}
		}
	}
	if rw := r.Rewrite; rw != nil {
		if rw.Host != "" && !config.ValidAuthority(rw.Host) {
			c.Errorf(rp+".rewrite.host", "%q: want host or host:port (RFC 9110 7.2)", rw.Host)
		}
		if strings.HasPrefix(rw.Prefix, "/") && !config.ValidPath(rw.Prefix) {
			c.Errorf(rp+".rewrite.prefix", "%q: want a path of URI characters (RFC 3986 3.3), without spaces, control characters, '?' or '#'", rw.Prefix)
		}
	}
	if s := r.Sticky; s != nil && s.Name != "" && !config.ValidHeaderName(s.Name) {
		c.Errorf(rp+".sticky.name", "%q: not a valid header or cookie name", s.Name)
	}
}

// routesTo reports whether a route sends requests to cluster.
func routesTo(routes []Route, cluster string) bool {
	for _, r := range routes {
		for _, t := range r.To {
			if t.Cluster == cluster {
				return true
			}
		}
	}
	return false
}
