package httpproxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jwtConfig is a listener with one provider (the lines of prov, indented
// under "- name: p") used by one route (jwt: route).
func jwtConfig(jwks, prov, route string) string {
	return `listeners:
  - name: l
    address: "127.0.0.1:7000"
    protocol: http
    jwt_providers:
      - name: p
        jwks: ` + jwks + `
` + prov + `    routes:
      - match: {prefix: /}
        to: [{cluster: a}]
        jwt: ` + route + `
clusters: [{name: a, endpoints: ["h:1"]}, {name: idp, endpoints: ["idp.example.com:443"], tls: {}}]
`
}

func TestJWTDefaults(t *testing.T) {
	t.Parallel()
	c, err := parse([]byte(jwtConfig("{cluster: idp, path: /.well-known/jwks.json}", "", "{provider: p}")), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	p := Options(&c.Listeners[0]).JWTProviders[0]
	if len(p.FromHeaders) != 1 || p.FromHeaders[0] != (JWTHeader{Name: "authorization", Prefix: "Bearer "}) {
		t.Errorf("from_headers %v, want authorization with Bearer", p.FromHeaders)
	}
	if p.ClockSkew.D() != time.Minute || p.RequireExpiration == nil || !*p.RequireExpiration || p.Forward {
		t.Errorf("clock_skew %v, require_expiration %v, forward %v", p.ClockSkew.D(), p.RequireExpiration, p.Forward)
	}
	if k := p.JWKS; k.Refresh.D() != 5*time.Minute || k.MinRefetchInterval.D() != 30*time.Second || k.Timeout.D() != 5*time.Second {
		t.Errorf("jwks %+v", k)
	}
	if r := Options(&c.Listeners[0]).Routes[0].JWT; r.Provider != "p" || r.AllowMissing {
		t.Errorf("route jwt %+v", r)
	}
	// Cookies alone: no default header.
	c, err = parse([]byte(jwtConfig("{cluster: idp, path: /j}", "        from_cookies: [session]\n", "{provider: p, allow_missing: true}")), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if p := Options(&c.Listeners[0]).JWTProviders[0]; p.FromHeaders != nil || !Options(&c.Listeners[0]).Routes[0].JWT.AllowMissing {
		t.Errorf("from_headers %v with cookies alone, want none", p.FromHeaders)
	}
}

// TestJWTBad: each bad setting is refused with its field path and line.
func TestJWTBad(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(file, []byte(`{"keys":[]}`), 0o644)
	url := "{cluster: idp, path: /.well-known/jwks.json}"
	for _, tc := range []struct{ name, jwks, prov, route, want string }{
		{"no source", "{}", "", "{provider: p}", `listeners[0].jwt_providers[0].jwks: needs file or cluster (with path) (line 7)`},
		{"both sources", "{file: " + file + ", cluster: idp, path: /j}", "", "{provider: p}", `listeners[0].jwt_providers[0].jwks: give only one of file or cluster (line 7)`},
		{"missing file", "{file: /nonexistent/jwks.json}", "", "{provider: p}", `listeners[0].jwt_providers[0].jwks.file: no such file "/nonexistent/jwks.json" (line 7)`},
		{"refresh with a file", "{file: " + file + ", refresh: 1m}", "", "{provider: p}", `listeners[0].jwt_providers[0].jwks.refresh: only with cluster (a file is re-read when it changes) (line 7)`},
		{"unknown cluster", "{cluster: idq, path: /j}", "", "{provider: p}", `listeners[0].jwt_providers[0].jwks.cluster: unknown cluster "idq" (line 7); did you mean "idp"?`},
		{"no path", "{cluster: idp}", "", "{provider: p}", `listeners[0].jwt_providers[0].jwks.path: required with cluster (the JWKS document's path, like /.well-known/jwks.json) (line 7)`},
		{"relative path", "{cluster: idp, path: jwks.json}", "", "{provider: p}", `listeners[0].jwt_providers[0].jwks.path: "jwks.json": want an absolute path like /.well-known/jwks.json (line 7)`},
		{"refresh too short", "{cluster: idp, path: /j, refresh: 10ms}", "", "{provider: p}", `listeners[0].jwt_providers[0].jwks.refresh: must be at least 1s (line 7)`},
		{"refetch too short", "{cluster: idp, path: /j, min_refetch_interval: 100ms}", "", "{provider: p}",
			`listeners[0].jwt_providers[0].jwks.min_refetch_interval: must be at least 1s (it bounds the fetches tokens with unknown key IDs cause) (line 7)`},
		{"refetch over refresh", "{cluster: idp, path: /j, refresh: 10s, min_refetch_interval: 1m}", "", "{provider: p}",
			`listeners[0].jwt_providers[0].jwks.min_refetch_interval: must not be longer than refresh (10s) (line 7)`},
		{"no token source", url, "        from_headers: []\n", "{provider: p}", `listeners[0].jwt_providers[0].from_headers: no place for a token: give from_headers or from_cookies (line 8)`},
		{"bad header name", url, "        from_headers: [{name: \"x jwt\"}]\n", "{provider: p}", `listeners[0].jwt_providers[0].from_headers[0].name: "x jwt": not a valid header name (line 8)`},
		{"cookie header", url, "        from_headers: [{name: Cookie}]\n", "{provider: p}", `listeners[0].jwt_providers[0].from_headers[0].name: "Cookie" cannot carry a token (use from_cookies for a cookie) (line 8)`},
		{"header twice", url, "        from_headers: [{name: x-jwt}, {name: X-JWT}]\n", "{provider: p}", `listeners[0].jwt_providers[0].from_headers[1].name: "X-JWT" is listed twice (line 8)`},
		{"bad cookie", url, "        from_cookies: [\"a;b\"]\n", "{provider: p}", `listeners[0].jwt_providers[0].from_cookies[0]: "a;b": not a valid cookie name (line 8)`},
		{"claim to Host", url, "        forward_claims: {sub: host}\n", "{provider: p}", `listeners[0].jwt_providers[0].forward_claims.sub: "host" may not be set from a claim (line 8)`},
		{"claim to the token header", url, "        forward_claims: {sub: Authorization}\n", "{provider: p}", `listeners[0].jwt_providers[0].forward_claims.sub: "Authorization" may not be set from a claim (line 8)`},
		{"claim to attache's header", url, "        forward_claims: {sub: x-attache-reason}\n", "{provider: p}", `listeners[0].jwt_providers[0].forward_claims.sub: "x-attache-reason" may not be set from a claim (line 8)`},
		{"claim to a token source", url, "        from_headers: [{name: x-jwt}]\n        forward_claims: {sub: x-jwt}\n", "{provider: p}",
			`listeners[0].jwt_providers[0].forward_claims.sub: "x-jwt" is where the token comes from (from_headers) (line 9)`},
		{"claim header not a token", url, "        forward_claims: {sub: \"x user\"}\n", "{provider: p}", `listeners[0].jwt_providers[0].forward_claims.sub: "x user": not a valid header name (line 8)`},
		{"skew", url, "        clock_skew: 1h\n", "{provider: p}", `listeners[0].jwt_providers[0].clock_skew: must be 0-10m (line 8)`},
		{"empty audience", url, "        audiences: [\"\"]\n", "{provider: p}", `listeners[0].jwt_providers[0].audiences[0]: empty (line 8)`},
		{"unknown field", url, "        jwks_uri: https://x\n", "{provider: p}", `listeners[0].jwt_providers[0].jwks_uri`},
		{"unknown provider", url, "", "{provider: q}", `listeners[0].routes[0].jwt.provider: unknown jwt provider "q" (line 11); did you mean "p"?`},
		{"no provider", url, "", "{allow_missing: true}", `listeners[0].routes[0].jwt.provider: required (line 11)`},
		{"route field", url, "", "{provider: p, require: true}", `listeners[0].routes[0].jwt.require`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(jwtConfig(tc.jwks, tc.prov, tc.route)), noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v\nwant %q", err, tc.want)
			}
		})
	}
}

// TestJWTRefusedElsewhere: providers on a listener that is not http, a
// provider no route uses, and a duplicate name.
func TestJWTRefusedElsewhere(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml, want string }{
		{"tcp listener", `listeners:
  - name: l
    address: "127.0.0.1:7000"
    protocol: tcp
    cluster: a
    jwt_providers: [{name: p, jwks: {cluster: a, path: /j}}]
clusters: [{name: a, endpoints: ["h:1"]}]
`, `listeners[0].jwt_providers: only for protocol http (line 6)`},
		{"unused", `listeners:
  - name: l
    address: "127.0.0.1:7000"
    protocol: http
    cluster: a
    jwt_providers: [{name: p, jwks: {cluster: a, path: /j}}]
clusters: [{name: a, endpoints: ["h:1"]}]
`, `listeners[0].jwt_providers[0]: provider "p" is not used by any route (routes[].jwt.provider) (line 6)`},
		{"duplicate", `listeners:
  - name: l
    address: "127.0.0.1:7000"
    protocol: http
    jwt_providers: [{name: p, jwks: {cluster: a, path: /j}}, {name: p, jwks: {cluster: a, path: /k}}]
    routes: [{match: {prefix: /}, to: [{cluster: a}], jwt: {provider: p}}]
clusters: [{name: a, endpoints: ["h:1"]}]
`, `listeners[0].jwt_providers[1].name: duplicate jwt provider name "p"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v\nwant %q", err, tc.want)
			}
		})
	}
}

// TestJWTClaimHeaderMatch: a route matched on a header that a JWT
// provider of the listener sets from a claim is refused: routes are
// matched before the token is checked, so the client's own copy would
// choose the route.
func TestJWTClaimHeaderMatch(t *testing.T) {
	t.Parallel()
	cfg := strings.Replace(jwtConfig("{file: /dev/null}", "        forward_claims: {tenant: x-tenant}\n", "{provider: p}"),
		"      - match: {prefix: /}\n", "      - match: {prefix: /, headers: {X-Tenant: beta}}\n", 1)
	want := `listeners[0].routes[0].match.headers.X-Tenant: set from a claim by jwt provider "p" (forward_claims): routes are matched before the token is checked, so the client's own copy would choose the route (line 10)`
	if _, err := parse([]byte(cfg), noEnv); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v\nwant %q", err, want)
	}
}
