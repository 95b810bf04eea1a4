package httpproxy

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/jwtauth/jwttest"
)

// TestJWTClaimsInContext: a verified request carries its claims in its
// context (claimsOf) and the forwarded claim headers, the spoofed copy
// gone; a provider whose settings did not change is kept across a reload,
// and one whose settings did is new.
func TestJWTClaimsInContext(t *testing.T) {
	t.Parallel()
	k := jwttest.NewKey("k1", jose.EdDSA)
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, jwttest.JWKS(k), 0o644); err != nil {
		t.Fatal(err)
	}
	parse := func(aud string) *config.Listener {
		c, err := config.Parse([]byte(`listeners:
  - name: l
    address: "127.0.0.1:7000"
    protocol: http
    jwt_providers: [{name: p, audiences: [`+aud+`], jwks: {file: "`+file+`"}, forward_claims: {sub: x-user, tenant.id: x-tenant}}]
    routes: [{name: r, match: {prefix: /}, to: [{cluster: a}], jwt: {provider: p}}]
clusters: [{name: a, endpoints: ["h:1"]}]
`), func(string) (string, bool) { return "", false }, []config.Schema{&Protocol{}})
		if err != nil {
			t.Fatal(err)
		}
		return &c.Listeners[0]
	}
	l := parse("orders")
	none := func(string) *Cluster { return nil }
	provs, err := newJWTProviders(l, nil, none, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{log: slog.New(slog.DiscardHandler), listener: "l"}
	x := &exchange{route: &compiledRoute{Name: "r", jwt: &routeJWT{prov: provs["p"]}}}
	tok := k.Sign(map[string]any{"sub": "alice", "aud": "orders", "tenant": map[string]any{"id": 42}, "exp": time.Now().Add(time.Hour).Unix()}, nil)
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-User", "mallory")
	r, ok := h.checkJWT(httptest.NewRecorder(), req, x)
	if !ok {
		t.Fatal("refused")
	}
	if c := claimsOf(r); c["sub"] != "alice" {
		t.Fatalf("claims in the context %v, want sub alice", c)
	}
	if r.Header.Get("X-User") != "alice" || r.Header.Get("X-Tenant") != "42" || r.Header.Get("Authorization") != "" {
		t.Fatalf("headers %v", r.Header)
	}
	if claimsOf(req.WithContext(t.Context())) != nil {
		t.Fatal("claims without a check")
	}

	w := httptest.NewRecorder()
	bad := httptest.NewRequest("GET", "/", nil)
	bad.Header.Set("Authorization", "Bearer "+tok+"x")
	if _, ok := h.checkJWT(w, bad, x); ok || w.Code != 401 {
		t.Fatalf("tampered token: ok %v, status %d", ok, w.Code)
	}

	again, err := newJWTProviders(parse("orders"), provs, none, nil, slog.New(slog.DiscardHandler))
	if err != nil || again["p"] != provs["p"] {
		t.Fatalf("unchanged provider not kept across a reload (err %v)", err)
	}
	changed, err := newJWTProviders(parse("billing"), provs, none, nil, slog.New(slog.DiscardHandler))
	if err != nil || changed["p"] == provs["p"] {
		t.Fatalf("changed provider kept (err %v)", err)
	}
}
