package httpproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/jwtauth"
)

// jwtProvider is one of a listener's JWT providers: its key set and
// verifier, where requests carry its tokens, and what of them goes on.
// It outlives a generation whose successor configures it alike (the same
// settings and the same cluster), so that a reload neither refetches the
// keys nor forgets them.
type jwtProvider struct {
	listener string
	cfg      JWTProvider
	cluster  *Cluster // of the JWKS; nil: a file
	p        *jwtauth.Provider
	x        *jwtauth.Extractor
	claims   []claimHeader
	headers  []string // the from_headers, as http.Header keys them
	realm    string   // the WWW-Authenticate challenge's start

	start, stop sync.Once
}

// claimHeader is a claim forwarded as a header.
type claimHeader struct{ claim, header string }

// routeJWT is a route's token check.
type routeJWT struct {
	prov         *jwtProvider
	allowMissing bool
	// bind returns the counter of one result (nil: no metrics); counts
	// caches them, by jwtResults index, made on first use so that
	// results never seen stay out of /metrics.
	bind   func(result string) func()
	counts [len(jwtResultNames)]atomic.Pointer[func()]
}

// jwtResultNames are the result label of the JWT metric: allowed, no_token
// (absent and allowed) and the refusal reasons.
var jwtResultNames = [...]string{"allowed", "no_token",
	jwtauth.ReasonMissing, jwtauth.ReasonMultiple, jwtauth.ReasonTooLarge, jwtauth.ReasonMalformed,
	jwtauth.ReasonAlgorithm, jwtauth.ReasonCrit, jwtauth.ReasonUnknownKey, jwtauth.ReasonNoKeys,
	jwtauth.ReasonSignature, jwtauth.ReasonExpired, jwtauth.ReasonNotYetValid, jwtauth.ReasonNoExpiration,
	jwtauth.ReasonIssuer, jwtauth.ReasonAudience, jwtauth.ReasonClaimMalformed}

func (j *routeJWT) count(result string) {
	if j.bind == nil {
		return
	}
	for i, n := range jwtResultNames {
		if n != result {
			continue
		}
		c := j.counts[i].Load()
		if c == nil {
			f := j.bind(result)
			c = &f
			j.counts[i].Store(c)
		}
		(*c)()
		return
	}
}

// newJWTProviders builds a listener's providers, keeping those of prev
// (the listener's previous generation) that did not change. clusters
// resolves names (validated already); loaded counts key-set loads.
func newJWTProviders(l *config.Listener, prev map[string]*jwtProvider, clusters func(string) *Cluster,
	loaded func(listener, provider string, err error), log *slog.Logger) (map[string]*jwtProvider, error) {
	out := map[string]*jwtProvider{}
	for i, pc := range Options(l).JWTProviders {
		var cl *Cluster
		if pc.JWKS.Cluster != "" {
			cl = clusters(pc.JWKS.Cluster)
		}
		if old := prev[pc.Name]; old != nil && old.listener == l.Name && old.cluster == cl && reflect.DeepEqual(old.cfg, pc) {
			out[pc.Name] = old
			continue
		}
		jp := &jwtProvider{listener: l.Name, cfg: pc, cluster: cl, realm: `Bearer realm="` + pc.Name + `"`}
		var sources []jwtauth.Source
		for _, h := range pc.FromHeaders {
			sources = append(sources, jwtauth.Source{Header: h.Name, Prefix: h.Prefix})
			jp.headers = append(jp.headers, http.CanonicalHeaderKey(h.Name))
		}
		for _, c := range pc.FromCookies {
			sources = append(sources, jwtauth.Source{Cookie: c})
		}
		jp.x = jwtauth.NewExtractor(sources)
		for claim, h := range pc.ForwardClaims {
			jp.claims = append(jp.claims, claimHeader{claim: claim, header: http.CanonicalHeaderKey(h)})
		}
		name, lname := pc.Name, l.Name
		o := jwtauth.Options{Name: pc.Name, Issuer: pc.Issuer, Audiences: pc.Audiences, ClockSkew: pc.ClockSkew.D(),
			RequireExpiration: pc.RequireExpiration == nil || *pc.RequireExpiration, File: pc.JWKS.File,
			Log: log, Loaded: func(err error) {
				if loaded != nil {
					loaded(lname, name, err)
				}
			}}
		if cl != nil {
			path := pc.JWKS.Path
			o.Fetch = func(ctx context.Context) ([]byte, error) { return cl.get(ctx, path, jwtauth.MaxJWKSBytes) }
			o.Source = "cluster " + pc.JWKS.Cluster + " " + path
			o.Refresh, o.MinRefetch, o.Timeout = pc.JWKS.Refresh.D(), pc.JWKS.MinRefetchInterval.D(), pc.JWKS.Timeout.D()
		} else {
			o.Source = "file " + pc.JWKS.File
		}
		p, err := jwtauth.New(o)
		if err != nil {
			return nil, fmt.Errorf("listeners[%s].jwt_providers[%d].jwks.file: %w", l.Name, i, err)
		}
		jp.p = p
		out[pc.Name] = jp
	}
	return out, nil
}

// bindJWT sets the token checks of t's routes, compiled from l's. A route
// with a check is served on the net/http path (not fast), where the
// request carries its claims in its context.
func (t *Table) bindJWT(l *config.Listener, provs map[string]*jwtProvider) {
	for i, r := range Options(l).Routes {
		if r.JWT != nil && i < len(t.Routes) {
			t.Routes[i].jwt = &routeJWT{prov: provs[r.JWT.Provider], allowMissing: r.JWT.AllowMissing}
			t.Routes[i].fast = false
		}
	}
}

// checkJWT runs a route's token check on r. On success it returns the
// request to forward: the claims in its context, the claim headers set
// (incoming copies of them are always removed), the token removed unless
// the provider forwards it. On failure it answers the client itself (401,
// or 400 for more than one token) and returns false: nothing is
// forwarded.
func (h *Handler) checkJWT(w http.ResponseWriter, r *http.Request, x *exchange) (*http.Request, bool) {
	j := x.route.jwt
	pv := j.prov
	for _, c := range pv.claims {
		r.Header.Del(c.header)
	}
	f, e := pv.x.Extract(r.Header)
	if e == nil && f.Token == "" {
		if j.allowMissing {
			j.count("no_token")
			return r, true
		}
		e = &jwtauth.Error{Reason: jwtauth.ReasonMissing}
	}
	var claims map[string]any
	if e == nil {
		claims, e = pv.p.Verify(r.Context(), f.Token)
	}
	if e != nil {
		j.count(e.Reason)
		x.reason = "jwt " + e.Reason
		h.log.Debug("jwt refused", "route", x.route.Name, "provider", pv.cfg.Name, "reason", e.Reason)
		challenge, status := pv.realm, http.StatusUnauthorized
		switch e.Reason {
		case jwtauth.ReasonMissing: // RFC 6750 3.1: no error code without credentials
		case jwtauth.ReasonMultiple:
			status = http.StatusBadRequest
			challenge += `, error="invalid_request", error_description="` + e.Description() + `"`
		default:
			challenge += `, error="invalid_token", error_description="` + e.Description() + `"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		w.Header().Set("X-Attache-Reason", x.reason)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		fmt.Fprintf(w, "attache: jwt: %s\n", e.Description())
		return r, false
	}
	if !pv.cfg.Forward {
		jwtauth.Strip(r.Header, f.Source)
	}
	for _, c := range pv.claims {
		if v, ok := claimValue(claims, c.claim); ok {
			r.Header.Set(c.header, v)
		}
	}
	j.count("allowed")
	return withClaims(r, claims), true
}

// tokenHeader reports whether h has one of the provider's token headers
// (from_headers), whatever its value: a request that still has one after
// the check carries credentials the check did not read.
func (pv *jwtProvider) tokenHeader(h http.Header) bool {
	for _, name := range pv.headers {
		if _, ok := h[name]; ok {
			return true
		}
	}
	return false
}

// claimValue is a claim as a header value: a string as it is, a number or
// boolean as JSON writes it, a list of strings joined by commas, anything
// else as JSON. A name not at the top level is tried as a dotted path
// into nested objects ("realm_access.roles"). false: no such claim, or a
// value no header may carry.
func claimValue(claims map[string]any, name string) (string, bool) {
	v, ok := lookupClaim(claims, name)
	if !ok {
		return "", false
	}
	var s string
	switch t := v.(type) {
	case string:
		s = t
	case bool:
		s = strconv.FormatBool(t)
	case float64:
		if t == math.Trunc(t) && math.Abs(t) < 1<<53 {
			s = strconv.FormatInt(int64(t), 10)
		} else {
			s = strconv.FormatFloat(t, 'g', -1, 64)
		}
	case []any:
		if parts, ok := stringList(t); ok {
			for _, p := range parts {
				// An element with a comma would read as two; one with
				// spaces at its ends as another once they are trimmed.
				if strings.ContainsRune(p, ',') || !trimmed(p) {
					return "", false
				}
			}
			s = strings.Join(parts, ",")
			break
		}
		b, _ := json.Marshal(t)
		s = string(b)
	default:
		b, err := json.Marshal(t)
		if err != nil {
			return "", false
		}
		s = string(b)
	}
	// A recipient trims the spaces at a field value's ends (RFC 9110
	// 5.5): " admin" would reach the upstream as "admin".
	return s, validValue(s) && trimmed(s)
}

// trimmed reports whether s has no space or tab at either end.
func trimmed(s string) bool {
	return s == "" || s[0] != ' ' && s[0] != '\t' && s[len(s)-1] != ' ' && s[len(s)-1] != '\t'
}

// lookupClaim is the claim name: at the top level, or else name as a
// dotted path into nested objects ("realm_access.roles", "tenant.id").
func lookupClaim(claims map[string]any, name string) (any, bool) {
	if v, ok := claims[name]; ok {
		return v, true
	}
	var cur any = claims
	for part := range strings.SplitSeq(name, ".") {
		m, isMap := cur.(map[string]any)
		if !isMap {
			return nil, false
		}
		var ok bool
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// stringList is l when every element is a string.
func stringList(l []any) ([]string, bool) {
	out := make([]string, 0, len(l))
	for _, e := range l {
		s, ok := e.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// get fetches path from an endpoint of the cluster (its TLS, HTTP
// version and credentials as for proxied requests), expecting a 200 and
// at most max bytes.
func (c *Cluster) get(ctx context.Context, path string, max int64) ([]byte, error) {
	ep := c.opts.Upstream.Pick(rand.Uint64(), nil)
	if ep == nil {
		return nil, errNoEndpoint
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.scheme()+"://"+ep.Addr+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	for _, cr := range c.opts.Credentials.Headers() {
		req.Header[cr.Name] = []string{cr.Value}
	}
	resp, err := c.transport(ep).RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ep.Addr, err)
	}
	defer resp.Body.Close()
	c.opts.Upstream.RecordResponse(ep, resp.StatusCode < 500)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %s", ep.Addr, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ep.Addr, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w", ep.Addr, errTooLarge)
	}
	return b, nil
}

var errTooLarge = errors.New("JWKS larger than the limit")

// jwtStatus is a route's token check in a listener's /status.
type jwtStatus struct {
	Route        string `json:"route"`
	Provider     string `json:"provider"`
	AllowMissing bool   `json:"allow_missing"`
}

// startJWT starts the providers' key watches and refreshes (once each).
func startJWT(provs map[string]*jwtProvider) {
	for _, p := range provs {
		p.start.Do(p.p.Start)
	}
}

// stopJWT stops the providers of provs that next does not keep.
func stopJWT(provs, next map[string]*jwtProvider) {
	for name, p := range provs {
		if next[name] != p {
			p.stop.Do(p.p.Stop)
		}
	}
}
