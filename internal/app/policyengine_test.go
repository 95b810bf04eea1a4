package app

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/grpcjson/grpcjsontest"
	"github.com/attache-proxy/attache/internal/jwtauth/jwttest"
)

// TestHTTPPolicyAfterEngineRequest: with the engine on (the default), a
// keep-alive connection the engine has served a plain request on then
// asks for a route with a policy; each policy holds on it: the JWT check
// (401 without a token), the response cache (one backend request for
// two), a limit keyed on a claim (per user), a limit sending its fields
// always, the cluster's rate limit, and transcoding. A plain client,
// through a real listener.
func TestHTTPPolicyAfterEngineRequest(t *testing.T) {
	t.Parallel()
	k := jwtKeys()["file-2"]
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, jwttest.JWKS(k), 0o644); err != nil {
		t.Fatal(err)
	}
	set := grpcjsontest.LibrarySet(t)
	desc := grpcjsontest.WriteSet(t, set)
	lib := grpcjsontest.ServeLibrary(t, set, nil)
	be := newBackend(t, "app", false)
	h := start(t, yamlf(`
listeners:
  - name: api
    address: "127.0.0.1:0"
    protocol: http
    jwt_providers: [{name: files, jwks: {file: %q}}]
    routes:
      - {match: {prefix: /plain/}, to: [{cluster: app}]}
      - {match: {prefix: /jwt/}, to: [{cluster: app}], jwt: {provider: files}}
      - {match: {prefix: /cache/}, to: [{cluster: app}], cache: {default_ttl: 1h}}
      - {match: {prefix: /claim/}, to: [{cluster: app}], jwt: {provider: files}, rate_limit: {requests: 1, per: 1h, key: {claim: sub}}}
      - {match: {prefix: /always/}, to: [{cluster: app}], rate_limit: {requests: 100, headers: always}}
      - {match: {prefix: /quota/}, to: [{cluster: quota}]}
      - {match: {prefix: /v1/}, to: [{cluster: library}], grpc_transcode: {descriptor_set_file: %q, services: [test.library.v1.Library]}}
clusters:
  - {name: app, endpoints: ["%s"]}
  - {name: quota, endpoints: ["%s"], rate_limit: {requests: 1, per: 1h}}
  - {name: library, endpoints: ["%s"], http: {version: h2c}}
`, jwks, desc, be.addr, be.addr, lib), nil)
	base := "http://" + h.addr("api")
	token := func(sub string) string {
		return "Bearer " + k.Sign(map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}, nil)
	}
	// on sends a plain request and then req over one connection.
	on := func(t *testing.T, method, path string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		tr := &http.Transport{MaxConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		if resp, _ := httpGet(t, c, base+"/plain/x", nil); resp.StatusCode != 200 {
			t.Fatalf("plain request: %d", resp.StatusCode)
		}
		req, _ := http.NewRequest(method, base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	t.Run("jwt", func(t *testing.T) {
		before := be.hits.Load()
		if resp, _ := on(t, "GET", "/jwt/x", nil); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("no token: %d %q, want 401 with a challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if n := be.hits.Load() - before; n != 1 { // the plain request
			t.Fatalf("backend requests %d, want 1 (the plain one)", n)
		}
		if resp, _ := on(t, "GET", "/jwt/x", map[string]string{"Authorization": token("alice")}); resp.StatusCode != 200 {
			t.Fatalf("token: %d", resp.StatusCode)
		}
	})
	t.Run("cache", func(t *testing.T) {
		before := be.hits.Load()
		for range 2 {
			if resp, _ := on(t, "GET", "/cache/x", nil); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		if n := be.hits.Load() - before; n != 3 { // two plain, one cached
			t.Fatalf("backend requests %d, want 3 (two plain, the second /cache/x from the cache)", n)
		}
	})
	t.Run("claim", func(t *testing.T) {
		for i, want := range []struct {
			sub    string
			status int
		}{{"alice", 200}, {"alice", 429}, {"bob", 200}} {
			if resp, _ := on(t, "GET", "/claim/x", map[string]string{"Authorization": token(want.sub)}); resp.StatusCode != want.status {
				t.Fatalf("request %d (%s): %d, want %d", i, want.sub, resp.StatusCode, want.status)
			}
		}
	})
	t.Run("always", func(t *testing.T) {
		if resp, _ := on(t, "GET", "/always/x", nil); resp.StatusCode != 200 || resp.Header.Get("RateLimit") == "" {
			t.Fatalf("status %d RateLimit %q, want 200 with the field", resp.StatusCode, resp.Header.Get("RateLimit"))
		}
	})
	t.Run("quota", func(t *testing.T) {
		if resp, _ := on(t, "GET", "/quota/x", nil); resp.StatusCode != 200 {
			t.Fatalf("first: %d", resp.StatusCode)
		}
		if resp, _ := on(t, "GET", "/quota/x", nil); resp.StatusCode != 429 || resp.Header.Get("X-Attache-Reason") != "upstream rate limited" {
			t.Fatalf("second: %d %q, want 429 upstream rate limited", resp.StatusCode, resp.Header.Get("X-Attache-Reason"))
		}
	})
	t.Run("transcode", func(t *testing.T) {
		resp, body := on(t, "GET", "/v1/shelves/1/books/2", nil)
		if resp.StatusCode != 200 || !strings.Contains(body, `"shelves/1/books/2"`) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("status %d %q %s, want the book as JSON", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	})
}

// TestHTTPJWTCacheUnverifiedTokenHeader: on a route with a JWT check that
// allows a missing token and a response cache, a request carrying the
// provider's token header in a form the check does not read (another
// scheme than the prefix) is a credentialed request the upstream may
// answer for that caller: it goes past the cache, so that a request
// without it is never served that caller's response.
func TestHTTPJWTCacheUnverifiedTokenHeader(t *testing.T) {
	t.Parallel()
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, jwttest.JWKS(jwtKeys()["file-2"]), 0o644); err != nil {
		t.Fatal(err)
	}
	be := newBackend(t, "app", false)
	h := start(t, yamlf(`
listeners:
  - name: api
    address: "127.0.0.1:0"
    protocol: http
    jwt_providers: [{name: files, jwks: {file: %q}, from_headers: [{name: x-token, prefix: "Bearer "}]}]
    routes:
      - {match: {prefix: /}, to: [{cluster: app}], jwt: {provider: files, allow_missing: true}, cache: {default_ttl: 1h}}
clusters:
  - {name: app, endpoints: ["%s"]}
`, jwks, be.addr), nil)
	url := "http://" + h.addr("api") + "/me"
	client := &http.Client{}
	if resp, _ := httpGet(t, client, url, map[string]string{"X-Token": "Session alice-42"}); resp.StatusCode != 200 {
		t.Fatalf("with the header: %d", resp.StatusCode)
	}
	before := be.hits.Load()
	if resp, _ := httpGet(t, client, url, nil); resp.StatusCode != 200 || resp.Header.Get("Age") != "" {
		t.Fatalf("without the header: %d, Age %q", resp.StatusCode, resp.Header.Get("Age"))
	}
	if n := be.hits.Load() - before; n != 1 {
		t.Fatalf("the request without the header made %d backend requests, want 1: it was served the response to x-token's caller", n)
	}
}

// TestHTTPStickyOnVerifiedClaim: a split kept sticky on a header that the
// route's JWT check sets from a claim (forward_claims) keys on the
// verified claim, not on the copy the client sent: one user stays on one
// side whatever it puts in the header, and cannot pick its side.
func TestHTTPStickyOnVerifiedClaim(t *testing.T) {
	t.Parallel()
	k := jwtKeys()["file-2"]
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, jwttest.JWKS(k), 0o644); err != nil {
		t.Fatal(err)
	}
	a, b := newBackend(t, "a", false), newBackend(t, "b", false)
	h := start(t, yamlf(`
listeners:
  - name: api
    address: "127.0.0.1:0"
    protocol: http
    jwt_providers: [{name: files, jwks: {file: %q}, forward_claims: {sub: x-user}}]
    routes:
      - match: {prefix: /}
        to: [{cluster: a, weight: 50}, {cluster: b, weight: 50}]
        sticky: {by: header, name: x-user}
        jwt: {provider: files}
clusters:
  - {name: a, endpoints: ["%s"]}
  - {name: b, endpoints: ["%s"]}
`, jwks, a.addr, b.addr), nil)
	tok := "Bearer " + k.Sign(map[string]any{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}, nil)
	client := &http.Client{}
	sides := map[string]int{}
	for i := range 20 {
		resp, _ := httpGet(t, client, "http://"+h.addr("api")+"/", map[string]string{"Authorization": tok, "X-User": fmt.Sprintf("mallory-%d", i)})
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		sides[resp.Header.Get("X-Backend")]++
	}
	if len(sides) != 1 {
		t.Fatalf("one user's requests went to %v: the split keyed on the client's X-User, not the verified claim", sides)
	}
}
