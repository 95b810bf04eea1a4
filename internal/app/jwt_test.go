package app

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/attache-proxy/attache/internal/jwtauth/jwttest"
)

// jwtKeys are made once for the JWT tests: RSA generation is slow.
var jwtKeys = sync.OnceValue(func() map[string]jwttest.Key {
	return map[string]jwttest.Key{
		"file-1": jwttest.NewKey("file-1", jose.RS256),
		"file-2": jwttest.NewKey("file-2", jose.EdDSA),
		"idp-1":  jwttest.NewKey("idp-1", jose.ES256),
		"idp-2":  jwttest.NewKey("idp-2", jose.PS256),
	}
})

// idpServer is a real issuer's JWKS endpoint that counts its fetches.
type idpServer struct {
	addr    string
	fetches atomic.Int64
	doc     atomic.Pointer[[]byte]
}

func newIDP(t *testing.T, keys ...jwttest.Key) *idpServer {
	t.Helper()
	s := &idpServer{}
	doc := jwttest.JWKS(keys...)
	s.doc.Store(&doc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		s.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.doc.Load())
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s.addr = ln.Addr().String()
	return s
}

func jwtClaims(iss string, extra map[string]any) map[string]any {
	c := map[string]any{"iss": iss, "aud": []string{"orders"}, "sub": "alice", "groups": []string{"a", "b"},
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// TestHTTPJWT: routes with a JWT check through a real attache listener,
// with a net/http backend and client, on each wire path: tokens from a
// file and from an issuer's JWKS endpoint (through a cluster) pass with
// their claims forwarded and the token stripped; missing, expired,
// forged, doubled and misplaced tokens get a 401 (400 for two) with the
// RFC 6750 challenge and never reach the backend; spoofed claim headers
// are removed; keys rotate by file and by URL, and unknown kids do not
// hammer the issuer.
func TestHTTPJWT(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"engine", "goroutine", "off"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			testHTTPJWT(t, pathEnv(path))
		})
	}
}

func testHTTPJWT(t *testing.T, env map[string]string) {
	k := jwtKeys()
	be := newBackend(t, "app", false)
	idp := newIDP(t, k["idp-1"])
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, jwttest.JWKS(k["file-1"]), 0o644); err != nil {
		t.Fatal(err)
	}
	h := start(t, yamlf(`
listeners:
  - name: api
    address: "127.0.0.1:0"
    protocol: http
    jwt_providers:
      - name: files
        issuer: https://files.test
        audiences: [orders]
        jwks: {file: %q}
        forward_claims: {sub: x-user, groups: x-groups}
        from_headers: [{name: authorization, prefix: "Bearer "}]
        from_cookies: [session]
      - name: idp
        issuer: https://idp.test
        audiences: [orders]
        jwks: {cluster: idp, path: /.well-known/jwks.json, refresh: 1h, min_refetch_interval: 1s}
        forward: true
        forward_claims: {sub: x-user}
    routes:
      - {name: file, match: {prefix: /file/}, to: [{cluster: app}], jwt: {provider: files}}
      - {name: url, match: {prefix: /url/}, to: [{cluster: app}], jwt: {provider: idp}}
      - {name: optional, match: {prefix: /optional/}, to: [{cluster: app}], jwt: {provider: files, allow_missing: true}}
      - {name: open, match: {prefix: /open/}, to: [{cluster: app}]}
clusters:
  - {name: app, endpoints: ["%s"]}
  - {name: idp, endpoints: ["%s"]}
`, jwks, be.addr, idp.addr), env)
	base := "http://" + h.addr("api")
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	fileTok := k["file-1"].Sign(jwtClaims("https://files.test", nil), nil)

	type want struct {
		status    int
		challenge string // WWW-Authenticate; "" with a 200
	}
	check := func(name, path string, hdr map[string]string, w want) http.Header {
		t.Helper()
		before := be.hits.Load()
		resp, body := httpGet(t, client, base+path, hdr)
		if resp.StatusCode != w.status {
			t.Fatalf("%s: status %d (%s), want %d", name, resp.StatusCode, body, w.status)
		}
		if got := resp.Header.Get("WWW-Authenticate"); got != w.challenge {
			t.Fatalf("%s: WWW-Authenticate %q, want %q", name, got, w.challenge)
		}
		if w.status != 200 {
			if be.hits.Load() != before {
				t.Fatalf("%s: a refused request reached the backend", name)
			}
			return nil
		}
		return be.last.Load().(http.Header)
	}
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

	// A good token from the file: claims forwarded, token stripped,
	// spoofed claim headers gone.
	hdr := bearer(fileTok)
	hdr["X-User"] = "mallory"
	hdr["X-Groups"] = "admin"
	got := check("file token", "/file/x", hdr, want{200, ""})
	if got.Get("X-User") != "alice" || got.Get("X-Groups") != "a,b" || got.Get("Authorization") != "" {
		t.Fatalf("backend saw X-User %q, X-Groups %q, Authorization %q; want alice, a,b and none", got.Get("X-User"), got.Get("X-Groups"), got.Get("Authorization"))
	}
	got = check("cookie token", "/file/x", map[string]string{"Cookie": "theme=dark; session=" + fileTok}, want{200, ""})
	if got.Get("Cookie") != "theme=dark" || got.Get("X-User") != "alice" {
		t.Fatalf("backend saw Cookie %q, X-User %q", got.Get("Cookie"), got.Get("X-User"))
	}

	// HTTP/2 (h2c): the same check.
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: h2}
	t.Cleanup(h2.CloseIdleConnections)
	if resp, _ := httpGet(t, h2c, base+"/file/x", bearer(fileTok)); resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("h2c with a token: %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}
	if resp, _ := httpGet(t, h2c, base+"/file/x", nil); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="files"` {
		t.Fatalf("h2c without a token: %d %q, want 401 with the challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	invalid := func(desc string) want {
		return want{401, `Bearer realm="files", error="invalid_token", error_description="` + desc + `"`}
	}
	rsaDER := k["file-1"].JWK(false)
	pub, _ := json.Marshal(rsaDER)
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		path string
		want want
	}{
		{"missing", nil, "/file/x", want{401, `Bearer realm="files"`}},
		{"in the query only", nil, "/file/x?access_token=" + fileTok, want{401, `Bearer realm="files"`}},
		{"basic auth", map[string]string{"Authorization": "Basic YTpi"}, "/file/x", want{401, `Bearer realm="files"`}},
		{"expired", bearer(k["file-1"].Sign(jwtClaims("https://files.test", map[string]any{"exp": time.Now().Add(-2 * time.Minute).Unix()}), nil)), "/file/x", invalid("token expired")},
		{"not yet valid", bearer(k["file-1"].Sign(jwtClaims("https://files.test", map[string]any{"nbf": time.Now().Add(5 * time.Minute).Unix()}), nil)), "/file/x", invalid("token not yet valid")},
		{"wrong audience", bearer(k["file-1"].Sign(jwtClaims("https://files.test", map[string]any{"aud": "payments"}), nil)), "/file/x", invalid("audience not accepted")},
		{"wrong issuer", bearer(k["file-1"].Sign(jwtClaims("https://idp.test", nil), nil)), "/file/x", invalid("issuer not accepted")},
		{"the other provider's key", bearer(k["idp-1"].Sign(jwtClaims("https://files.test", nil), nil)), "/file/x", invalid("no key for the token's kid and alg")},
		{"alg none", bearer(jwttest.Unsigned(map[string]any{"alg": "none", "kid": "file-1"}, jwtClaims("https://files.test", nil))), "/file/x", invalid("signature algorithm not accepted")},
		{"HS256 with the public key", bearer(jwttest.HMAC(map[string]any{"alg": "HS256", "kid": "file-1"}, jwtClaims("https://files.test", nil), pub)), "/file/x", invalid("signature algorithm not accepted")},
		{"crit", bearer(k["file-1"].Sign(jwtClaims("https://files.test", nil), map[string]any{"crit": []string{"x-ext"}, "x-ext": 1})), "/file/x", invalid("critical header extension not supported")},
		{"oversized", bearer(k["file-1"].Sign(jwtClaims("https://files.test", map[string]any{"pad": strings.Repeat("p", 9000)}), nil)), "/file/x", invalid("token too large")},
		{"tampered", bearer(fileTok[:len(fileTok)-4] + "AAAA"), "/file/x", invalid("signature verification failed")},
		{"header and cookie", map[string]string{"Authorization": "Bearer " + fileTok, "Cookie": "session=" + fileTok}, "/file/x",
			want{400, `Bearer realm="files", error="invalid_request", error_description="more than one token in the request"`}},
		{"allow_missing, bad token", bearer("not-a-token"), "/optional/x", invalid("malformed token")},
	} {
		check(tc.name, tc.path, tc.hdr, tc.want)
	}

	got = check("allow_missing, none", "/optional/x", map[string]string{"X-User": "mallory"}, want{200, ""})
	if got.Get("X-User") != "" {
		t.Fatalf("allow_missing without a token: backend saw X-User %q, want it removed", got.Get("X-User"))
	}
	got = check("no check", "/open/x", map[string]string{"X-User": "mallory"}, want{200, ""})
	if got.Get("X-User") != "mallory" {
		t.Fatalf("a route without a check changed X-User to %q", got.Get("X-User"))
	}

	// From the issuer's JWKS endpoint, through the cluster; forward: true
	// keeps the token.
	idpTok := k["idp-1"].Sign(jwtClaims("https://idp.test", nil), nil)
	eventually(t, 10*time.Second, "the idp's keys", func() bool {
		resp, _ := httpGet(t, client, base+"/url/x", bearer(idpTok))
		return resp.StatusCode == 200
	})
	if got := be.last.Load().(http.Header); got.Get("Authorization") != "Bearer "+idpTok || got.Get("X-User") != "alice" {
		t.Fatalf("forward: true: backend saw Authorization %q, X-User %q", got.Get("Authorization"), got.Get("X-User"))
	}

	// Rotation at the issuer: a token with the new kid makes one refetch
	// (the last fetch was more than min_refetch_interval ago).
	rotated := jwttest.JWKS(k["idp-1"], k["idp-2"])
	idp.doc.Store(&rotated)
	time.Sleep(1100 * time.Millisecond)
	before := idp.fetches.Load()
	check("rotated kid at the issuer", "/url/x", bearer(k["idp-2"].Sign(jwtClaims("https://idp.test", nil), nil)), want{200, ""})
	if n := idp.fetches.Load() - before; n != 1 {
		t.Fatalf("%d fetches for the new kid, want 1", n)
	}
	// A flood of unknown kids: at most one fetch per min_refetch_interval.
	before = idp.fetches.Load()
	start := time.Now()
	for i := range 50 {
		forged := jwttest.Key{KID: fmt.Sprintf("random-%d", i), Alg: jose.ES256, Priv: k["idp-1"].Priv}.Sign(jwtClaims("https://idp.test", nil), nil)
		resp, _ := httpGet(t, client, base+"/url/x", bearer(forged))
		if resp.StatusCode != 401 {
			t.Fatalf("unknown kid: status %d, want 401", resp.StatusCode)
		}
	}
	if n, limit := idp.fetches.Load()-before, int64(time.Since(start)/time.Second)+1; n > limit {
		t.Fatalf("%d fetches for 50 unknown kids in %v, want at most %d", n, time.Since(start), limit)
	}

	// Rotation by file.
	if err := os.WriteFile(jwks, jwttest.JWKS(k["file-2"]), 0o644); err != nil {
		t.Fatal(err)
	}
	newTok := k["file-2"].Sign(jwtClaims("https://files.test", nil), nil)
	eventually(t, 10*time.Second, "the rewritten JWKS file", func() bool {
		resp, _ := httpGet(t, client, base+"/file/x", bearer(newTok))
		return resp.StatusCode == 200
	})
	check("a key removed from the file", "/file/x", bearer(fileTok), invalid("no key for the token's kid and alg"))

	// Status and metrics.
	_, body := h.admin("GET", "/status")
	var st struct {
		Listeners []struct {
			JWT          []map[string]any `json:"jwt"`
			JWTProviders []map[string]any `json:"jwt_providers"`
		} `json:"listeners"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Listeners) != 1 {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	l := st.Listeners[0]
	if len(l.JWT) != 3 || l.JWT[2]["route"] != "optional" || l.JWT[2]["provider"] != "files" || l.JWT[2]["allow_missing"] != true {
		t.Fatalf("/status jwt: %v", l.JWT)
	}
	if len(l.JWTProviders) != 2 || l.JWTProviders[1]["source"] != "cluster idp /.well-known/jwks.json" || l.JWTProviders[1]["keys"] != 2.0 ||
		l.JWTProviders[1]["last_refresh"] == nil || l.JWTProviders[0]["source"] != "file "+jwks {
		t.Fatalf("/status jwt_providers: %v", l.JWTProviders)
	}
	for metric, want := range map[string]string{
		`attache_http_jwt_requests_total{listener="api",provider="files",result="expired",route="file"}`:      "1",
		`attache_http_jwt_requests_total{listener="api",provider="files",result="no_token",route="optional"}`: "1",
		`attache_http_jwt_requests_total{listener="api",provider="files",result="missing",route="file"}`:      "4",
		`attache_http_jwt_jwks_keys{listener="api",provider="idp"}`:                                           "2",
	} {
		if got := h.metric(metric); got != want {
			t.Fatalf("%s = %q, want %s", metric, got, want)
		}
	}
}

// TestHTTPJWTCachedRoute: on a route with a JWT check and a response
// cache, a request whose token verified always reaches the backend (the
// response is the user's, and the token is gone from the request), while
// requests without one share the cache.
func TestHTTPJWTCachedRoute(t *testing.T) {
	t.Parallel()
	k := jwtKeys()
	be := newBackend(t, "app", false)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, jwttest.JWKS(k["file-1"]), 0o644); err != nil {
		t.Fatal(err)
	}
	h := start(t, yamlf(`
listeners:
  - name: api
    address: "127.0.0.1:0"
    protocol: http
    jwt_providers: [{name: files, jwks: {file: %q}, forward_claims: {sub: x-user}}]
    routes:
      - {match: {prefix: /}, to: [{cluster: app}], jwt: {provider: files, allow_missing: true}, cache: {default_ttl: 1h}}
clusters:
  - {name: app, endpoints: ["%s"]}
`, jwks, be.addr), nil)
	client := &http.Client{}
	url := "http://" + h.addr("api") + "/me"
	for _, sub := range []string{"alice", "bob"} {
		tok := k["file-1"].Sign(map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}, nil)
		before := be.hits.Load()
		resp, _ := httpGet(t, client, url, map[string]string{"Authorization": "Bearer " + tok})
		if resp.StatusCode != 200 || be.hits.Load() != before+1 || be.last.Load().(http.Header).Get("X-User") != sub {
			t.Fatalf("%s: status %d, backend hits %d -> %d, X-User %q: want the backend to answer each user", sub,
				resp.StatusCode, before, be.hits.Load(), be.last.Load().(http.Header).Get("X-User"))
		}
	}
	before := be.hits.Load()
	for range 2 {
		if resp, _ := httpGet(t, client, url, nil); resp.StatusCode != 200 {
			t.Fatalf("without a token: %d", resp.StatusCode)
		}
	}
	if n := be.hits.Load() - before; n != 1 {
		t.Fatalf("two requests without a token made %d backend requests, want 1 (the second from the cache)", n)
	}
}
