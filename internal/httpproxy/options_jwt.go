package httpproxy

import (
	"fmt"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// JWTProvider is an issuer of JSON Web Tokens that an http listener's
// routes accept (Envoy's jwt_authn provider): where its keys are, what
// its tokens must say, where requests carry them and what of them goes
// on to the upstream.
type JWTProvider struct {
	Name string `yaml:"name"`
	// Issuer is the iss every token must have; empty: not checked.
	Issuer string `yaml:"issuer"`
	// Audiences: a token's aud must hold one of them; empty: not checked.
	Audiences []string `yaml:"audiences"`
	JWKS      JWKS     `yaml:"jwks"`
	// FromHeaders are where a token may be; default Authorization with
	// the prefix "Bearer ".
	FromHeaders []JWTHeader `yaml:"from_headers"`
	// FromCookies are cookies that may hold a token.
	FromCookies []string `yaml:"from_cookies"`
	// Forward keeps the token on the request to the upstream; default
	// false: the header or cookie it came in is removed.
	Forward bool `yaml:"forward"`
	// ForwardClaims sets a header from a claim (claim: header); incoming
	// copies of the headers are removed first.
	ForwardClaims map[string]string `yaml:"forward_claims"`
	// ClockSkew is the leeway on exp, nbf and iat; default 60s.
	ClockSkew config.Duration `yaml:"clock_skew"`
	// RequireExpiration refuses tokens without exp; default true.
	RequireExpiration *bool `yaml:"require_expiration"`
}

// JWKS is where a provider's public keys come from: a file (re-read when
// it changes) or a path on a cluster (fetched every Refresh, and again
// when a token names a key it does not have, at most once per
// MinRefetchInterval).
type JWKS struct {
	File               string          `yaml:"file"`
	Cluster            string          `yaml:"cluster"`
	Path               string          `yaml:"path"`
	Refresh            config.Duration `yaml:"refresh"`              // default 5m
	MinRefetchInterval config.Duration `yaml:"min_refetch_interval"` // default 30s
	Timeout            config.Duration `yaml:"timeout"`              // of one fetch; default 5s
}

// JWTHeader is a request header that may carry a token after Prefix
// (matched without regard to case, as auth schemes are).
type JWTHeader struct {
	Name   string `yaml:"name"`
	Prefix string `yaml:"prefix"`
}

// RouteJWT is a route's token check: tokens of Provider are verified, and
// a request without one is refused unless AllowMissing. A token that is
// present and fails is refused either way.
type RouteJWT struct {
	Provider     string `yaml:"provider"`
	AllowMissing bool   `yaml:"allow_missing"`
}

// JWT defaults.
const (
	DefaultJWKSRefresh  = 5 * time.Minute
	DefaultJWKSRefetch  = 30 * time.Second
	DefaultJWKSTimeout  = 5 * time.Second
	DefaultJWTClockSkew = 60 * time.Second
	DefaultJWTHeader    = "authorization"
	DefaultJWTPrefix    = "Bearer "
	maxJWTClockSkew     = 10 * time.Minute
	minJWKSRefetch      = time.Second
	minJWKSRefresh      = time.Second
)

// applyJWTDefaults fills the defaults of a listener's JWT providers.
func (o *ListenerOptions) applyJWTDefaults(c *config.Check) {
	has := c.Has
	for i := range o.JWTProviders {
		j := &o.JWTProviders[i]
		jp := fmt.Sprintf("%s.jwt_providers[%d]", c.Path, i)
		if j.FromHeaders == nil && len(j.FromCookies) == 0 && !has(jp+".from_headers") {
			j.FromHeaders = []JWTHeader{{Name: DefaultJWTHeader, Prefix: DefaultJWTPrefix}}
		}
		if j.ClockSkew == 0 && !has(jp+".clock_skew") {
			j.ClockSkew = config.Duration(DefaultJWTClockSkew)
		}
		if j.RequireExpiration == nil {
			t := true
			j.RequireExpiration = &t
		}
		if k := &j.JWKS; k.Cluster != "" {
			if k.Refresh == 0 {
				k.Refresh = config.Duration(DefaultJWKSRefresh)
			}
			if k.MinRefetchInterval == 0 {
				k.MinRefetchInterval = config.Duration(DefaultJWKSRefetch)
			}
			if k.Timeout == 0 {
				k.Timeout = config.Duration(DefaultJWKSTimeout)
			}
		}
	}
}

// jwtReservedHeaders may not be set from claims: they frame the message,
// route it or carry credentials.
var jwtReservedHeaders = map[string]bool{"host": true, "content-length": true, "transfer-encoding": true,
	"connection": true, "upgrade": true, "te": true, "trailer": true, "keep-alive": true, "proxy-connection": true,
	"cookie": true, "authorization": true}

// jwtProviders validates a listener's providers and the routes' jwt
// blocks at p.
func (o *ListenerOptions) validateJWT(c *config.Check) {
	p := c.Path
	names := map[string]bool{}
	var list []string
	for i, j := range o.JWTProviders {
		jp := fmt.Sprintf("%s.jwt_providers[%d]", p, i)
		c.Name(jp+".name", j.Name, "jwt provider", names)
		list = append(list, j.Name)
		for k, a := range j.Audiences {
			if a == "" {
				c.Errorf(fmt.Sprintf("%s.audiences[%d]", jp, k), "empty")
			}
		}
		k := j.JWKS
		switch {
		case k.File == "" && k.Cluster == "":
			c.Errorf(jp+".jwks", "needs file or cluster (with path)")
		case k.File != "" && k.Cluster != "":
			c.Errorf(jp+".jwks", "give only one of file or cluster")
		case k.File != "":
			c.File(jp+".jwks.file", k.File)
			for _, f := range []struct {
				name string
				set  bool
			}{{"path", k.Path != ""}, {"refresh", k.Refresh != 0}, {"min_refetch_interval", k.MinRefetchInterval != 0}, {"timeout", k.Timeout != 0}} {
				if f.set {
					c.Errorf(jp+".jwks."+f.name, "only with cluster (a file is re-read when it changes)")
				}
			}
		default:
			c.ClusterRef(jp+".jwks.cluster", k.Cluster)
			switch {
			case k.Path == "":
				c.Errorf(jp+".jwks.path", "required with cluster (the JWKS document's path, like /.well-known/jwks.json)")
			case !strings.HasPrefix(k.Path, "/") || !config.ValidHeaderValue(k.Path) || strings.ContainsAny(k.Path, " #"):
				c.Errorf(jp+".jwks.path", "%q: want an absolute path like /.well-known/jwks.json", k.Path)
			}
			if k.Refresh < config.Duration(minJWKSRefresh) {
				c.Errorf(jp+".jwks.refresh", "must be at least 1s")
			}
			if k.MinRefetchInterval < config.Duration(minJWKSRefetch) {
				c.Errorf(jp+".jwks.min_refetch_interval", "must be at least 1s (it bounds the fetches tokens with unknown key IDs cause)")
			} else if k.MinRefetchInterval > k.Refresh && k.Refresh >= config.Duration(minJWKSRefresh) {
				c.Errorf(jp+".jwks.min_refetch_interval", "must not be longer than refresh (%s)", k.Refresh.D())
			}
			if k.Timeout <= 0 {
				c.Errorf(jp+".jwks.timeout", "must be positive")
			}
		}
		if len(j.FromHeaders) == 0 && len(j.FromCookies) == 0 {
			c.Errorf(jp+".from_headers", "no place for a token: give from_headers or from_cookies")
		}
		from := map[string]bool{}
		for k, h := range j.FromHeaders {
			hp := fmt.Sprintf("%s.from_headers[%d]", jp, k)
			switch n := strings.ToLower(h.Name); {
			case !config.ValidHeaderName(h.Name):
				c.Errorf(hp+".name", "%q: not a valid header name", h.Name)
			case n == "cookie" || n == "host" || jwtReservedHeaders[n] && n != "authorization":
				c.Errorf(hp+".name", "%q cannot carry a token (use from_cookies for a cookie)", h.Name)
			case from[n]:
				c.Errorf(hp+".name", "%q is listed twice", h.Name)
			}
			from[strings.ToLower(h.Name)] = true
			if !config.ValidHeaderValue(h.Prefix) {
				c.Errorf(hp+".prefix", "holds a control character")
			}
		}
		for k, ck := range j.FromCookies {
			if !config.ValidHeaderName(ck) {
				c.Errorf(fmt.Sprintf("%s.from_cookies[%d]", jp, k), "%q: not a valid cookie name", ck)
			}
		}
		to := map[string]string{}
		for claim, h := range j.ForwardClaims {
			cp := jp + ".forward_claims." + claim
			n := strings.ToLower(h)
			switch {
			case claim == "":
				c.Errorf(cp, "empty claim name")
			case !config.ValidHeaderName(h):
				c.Errorf(cp, "%q: not a valid header name", h)
			case jwtReservedHeaders[n] || strings.HasPrefix(n, "x-attache-"):
				c.Errorf(cp, "%q may not be set from a claim", h)
			case from[n]:
				c.Errorf(cp, "%q is where the token comes from (from_headers)", h)
			case to[n] != "":
				c.Errorf(cp, "header %q is already set from claim %q", h, to[n])
			}
			if n != "" && to[n] == "" {
				to[n] = claim
			}
		}
		if j.ClockSkew < 0 || j.ClockSkew > config.Duration(maxJWTClockSkew) {
			c.Errorf(jp+".clock_skew", "must be 0-10m")
		}
	}
	// Headers set from claims: a route is matched before its token is
	// checked, so a route matched on one would be chosen by the client's
	// own copy (a user of one tenant reaching another's route).
	claimHeaders := map[string]string{}
	for _, j := range o.JWTProviders {
		for _, h := range j.ForwardClaims {
			claimHeaders[strings.ToLower(h)] = j.Name
		}
	}
	used := map[string]bool{}
	for i, r := range o.Routes {
		for h := range r.Match.Headers {
			if prov := claimHeaders[strings.ToLower(h)]; prov != "" {
				c.Errorf(fmt.Sprintf("%s.routes[%d].match.headers.%s", p, i, h),
					"set from a claim by jwt provider %q (forward_claims): routes are matched before the token is checked, so the client's own copy would choose the route", prov)
			}
		}
		if r.JWT == nil {
			// A claim is only known from a token the route verified: a
			// limit keyed by one would otherwise count every request in
			// the route's one bucket.
			if rl := r.RateLimit; rl != nil && rl.Key != nil && rl.Key.Claim != "" {
				c.Errorf(fmt.Sprintf("%s.routes[%d].rate_limit.key.claim", p, i), "needs the route's jwt (a claim is read from the token it verifies)")
			}
			continue
		}
		rp := fmt.Sprintf("%s.routes[%d].jwt", p, i)
		used[r.JWT.Provider] = true
		switch {
		case r.JWT.Provider == "":
			c.Errorf(rp+".provider", "required")
		case !names[r.JWT.Provider]:
			e := config.Error{Path: rp + ".provider", Msg: fmt.Sprintf("unknown jwt provider %q", r.JWT.Provider)}
			if s := config.Suggest(r.JWT.Provider, list); s != "" {
				e.Hint = fmt.Sprintf("did you mean %q?", s)
			} else if len(list) == 0 {
				e.Hint = fmt.Sprintf("define it in %s.jwt_providers", p)
			}
			c.Error(e)
		}
	}
	for i, j := range o.JWTProviders {
		if j.Name != "" && !used[j.Name] {
			c.Errorf(fmt.Sprintf("%s.jwt_providers[%d]", p, i), "provider %q is not used by any route (routes[].jwt.provider)", j.Name)
		}
	}
}
