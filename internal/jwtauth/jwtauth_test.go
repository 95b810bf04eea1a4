package jwtauth

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
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

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// keys are made once: RSA generation is slow.
var keys = sync.OnceValue(func() map[string]jwttest.Key {
	return map[string]jwttest.Key{
		"rs":  jwttest.NewKey("rs", jose.RS256),
		"ps":  jwttest.NewKey("ps", jose.PS384),
		"es":  jwttest.NewKey("es", jose.ES256),
		"es3": jwttest.NewKey("es3", jose.ES384),
		"es5": jwttest.NewKey("es5", jose.ES512),
		"ed":  jwttest.NewKey("ed", jose.EdDSA),
	}
})

func claims(extra map[string]any) map[string]any {
	c := map[string]any{"iss": "https://issuer.test", "aud": "orders", "sub": "alice",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Add(-time.Minute).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func writeJWKS(t *testing.T, b []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func newProvider(t *testing.T, o Options) *Provider {
	t.Helper()
	if o.Name == "" {
		o.Name = "test"
	}
	o.Issuer, o.Audiences, o.ClockSkew, o.RequireExpiration = "https://issuer.test", []string{"orders", "billing"}, time.Minute, true
	if o.Now == nil {
		o.Now = func() time.Time { return now }
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVerify: every supported algorithm passes, and each attack of RFC
// 8725 and each claim check fails with its reason.
func TestVerify(t *testing.T) {
	t.Parallel()
	k := keys()
	all := []jwttest.Key{k["rs"], k["ps"], k["es"], k["es3"], k["es5"], k["ed"]}
	p := newProvider(t, Options{File: writeJWKS(t, jwttest.JWKS(all...))})
	rsaDER, _ := x509.MarshalPKIXPublicKey(k["rs"].Priv.Public())
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER})
	rsaJWK, _ := json.Marshal(k["rs"].JWK(false))
	// a key of the attacker's, offered in the token's own jwk header
	evil := jwttest.NewKey("rs", jose.ES256)
	evilJWK := evil.JWK(false)
	for _, tc := range []struct {
		name, token, want string // want "": accepted
	}{
		{"RS256", k["rs"].Sign(claims(nil), nil), ""},
		{"PS384", k["ps"].Sign(claims(nil), nil), ""},
		{"ES256", k["es"].Sign(claims(nil), nil), ""},
		{"ES384", k["es3"].Sign(claims(nil), nil), ""},
		{"ES512", k["es5"].Sign(claims(nil), nil), ""},
		{"EdDSA", k["ed"].Sign(claims(nil), nil), ""},
		{"no kid tries the keys that fit", jwttest.Key{Alg: jose.ES256, Priv: k["es"].Priv}.Sign(claims(nil), nil), ""},
		{"aud list", k["es"].Sign(claims(map[string]any{"aud": []string{"x", "billing"}}), nil), ""},
		{"expired within skew", k["es"].Sign(claims(map[string]any{"exp": now.Add(-30 * time.Second).Unix()}), nil), ""},
		{"nbf within skew", k["es"].Sign(claims(map[string]any{"nbf": now.Add(30 * time.Second).Unix()}), nil), ""},

		{"alg none", jwttest.Unsigned(map[string]any{"alg": "none", "kid": "rs"}, claims(nil)), ReasonAlgorithm},
		{"alg None", jwttest.Unsigned(map[string]any{"alg": "None"}, claims(nil)), ReasonAlgorithm},
		{"HS256 keyed with the RSA public key PEM", jwttest.HMAC(map[string]any{"alg": "HS256", "kid": "rs"}, claims(nil), rsaPEM), ReasonAlgorithm},
		{"HS256 keyed with the RSA public key DER", jwttest.HMAC(map[string]any{"alg": "HS256", "kid": "rs"}, claims(nil), rsaDER), ReasonAlgorithm},
		{"HS256 keyed with the JWK", jwttest.HMAC(map[string]any{"alg": "HS256", "kid": "rs"}, claims(nil), rsaJWK), ReasonAlgorithm},
		{"ES256 header naming the RSA key", jwttest.Key{KID: "rs", Alg: jose.ES256, Priv: k["es"].Priv}.Sign(claims(nil), nil), ReasonUnknownKey},
		{"RS256 header naming the EC key", jwttest.Key{KID: "es", Alg: jose.RS256, Priv: k["rs"].Priv}.Sign(claims(nil), nil), ReasonUnknownKey},
		{"ES384 header naming the P-256 key", jwttest.Key{KID: "es", Alg: jose.ES384, Priv: k["es3"].Priv}.Sign(claims(nil), nil), ReasonUnknownKey},
		{"RS512 against a JWK with alg RS256", jwttest.Key{KID: "rs", Alg: jose.RS512, Priv: k["rs"].Priv}.Sign(claims(nil), nil), ReasonUnknownKey},
		{"signed by another key", jwttest.Key{KID: "es", Alg: jose.ES256, Priv: evil.Priv}.Sign(claims(nil), nil), ReasonSignature},
		{"embedded jwk of the attacker", jwttest.Key{KID: "es", Alg: jose.ES256, Priv: evil.Priv}.Sign(claims(nil), map[string]any{"jwk": evilJWK}), ReasonSignature},
		{"jku of the attacker", jwttest.Key{KID: "evil", Alg: jose.ES256, Priv: evil.Priv}.Sign(claims(nil), map[string]any{"jku": "http://127.0.0.1:1/jwks"}), ReasonUnknownKey},
		{"kid with path characters", jwttest.Key{KID: "../../../../etc/passwd", Alg: jose.ES256, Priv: k["es"].Priv}.Sign(claims(nil), nil), ReasonUnknownKey},
		{"kid too long", jwttest.Key{KID: strings.Repeat("k", 300), Alg: jose.ES256, Priv: k["es"].Priv}.Sign(claims(nil), nil), ReasonMalformed},
		{"crit header", k["es"].Sign(claims(nil), map[string]any{"crit": []string{"exp"}, "exp": 1}), ReasonCrit},
		{"crit b64", k["es"].Sign(claims(nil), map[string]any{"crit": []string{"b64"}, "b64": true}), ReasonCrit},
		{"expired", k["es"].Sign(claims(map[string]any{"exp": now.Add(-2 * time.Minute).Unix()}), nil), ReasonExpired},
		{"not yet valid", k["es"].Sign(claims(map[string]any{"nbf": now.Add(2 * time.Minute).Unix()}), nil), ReasonNotYetValid},
		{"issued in the future", k["es"].Sign(claims(map[string]any{"iat": now.Add(2 * time.Minute).Unix()}), nil), ReasonNotYetValid},
		{"no exp", k["es"].Sign(claims(map[string]any{"exp": nil}), nil), ReasonNoExpiration},
		{"exp a string", k["es"].Sign(claims(map[string]any{"exp": "tomorrow"}), nil), ReasonClaimMalformed},
		{"wrong aud", k["es"].Sign(claims(map[string]any{"aud": "payments"}), nil), ReasonAudience},
		{"no aud", k["es"].Sign(claims(map[string]any{"aud": nil}), nil), ReasonAudience},
		{"aud not strings", k["es"].Sign(claims(map[string]any{"aud": []any{1}}), nil), ReasonClaimMalformed},
		{"wrong iss", k["es"].Sign(claims(map[string]any{"iss": "https://evil.test"}), nil), ReasonIssuer},
		{"iss a number", k["es"].Sign(claims(map[string]any{"iss": 7}), nil), ReasonClaimMalformed},
		{"too large", k["es"].Sign(claims(map[string]any{"pad": strings.Repeat("x", MaxTokenBytes)}), nil), ReasonTooLarge},
		{"two segments", "eyJhbGciOiJFUzI1NiJ9.e30", ReasonMalformed},
		{"JSON serialization", `{"payload":"e30","signatures":[]}`, ReasonMalformed},
		{"header not JSON", "bm90anNvbg.e30.c2ln", ReasonMalformed},
		{"payload not an object", k["es"].Sign(nil, nil), ReasonMalformed},
		{"space inside", "eyJhbGciOiJFUzI1NiJ9 .e30.c2ln", ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := p.Verify(context.Background(), tc.token)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %s", err.Reason)
			case tc.want == "" && c["sub"] != "alice":
				t.Fatalf("claims %v, want sub alice", c)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted, want %s", tc.want)
			case tc.want != "" && err.Reason != tc.want:
				t.Fatalf("got %s, want %s", err.Reason, tc.want)
			}
		})
	}
}

// TestParseJWKS: symmetric keys, encryption keys, short RSA keys and keys
// whose alg their type cannot make are skipped; a document with none
// left is an error.
func TestParseJWKS(t *testing.T) {
	t.Parallel()
	k := keys()
	es := k["es"].JWK(true)
	esJSON, _ := json.Marshal(es)
	for _, tc := range []struct {
		name, doc string
		keys      int
		err       string
	}{
		{"one", string(jwttest.JWKS(k["es"])), 1, ""},
		{"oct skipped", `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"},` + string(esJSON) + `]}`, 1, ""},
		{"only oct", `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}`, 0, "no usable signature key (1 skipped"},
		{"enc skipped", `{"keys":[` + strings.Replace(string(esJSON), `"use":"sig"`, `"use":"enc"`, 1) + `]}`, 0, "no usable signature key"},
		{"alg the type cannot do", `{"keys":[` + strings.Replace(string(esJSON), `"alg":"ES256"`, `"alg":"RS256"`, 1) + `]}`, 0, "no usable signature key"},
		{"unknown kty skipped", `{"keys":[{"kty":"XYZ"},` + string(esJSON) + `]}`, 1, ""},
		{"no keys", `{}`, 0, `no "keys" array`},
		{"not JSON", `nope`, 0, "JWKS: invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ks, err := parseJWKS([]byte(tc.doc))
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %v, want an error with %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err == "" && len(ks.keys) != tc.keys:
				t.Fatalf("got %d keys, want %d", len(ks.keys), tc.keys)
			}
		})
	}
	if _, err := parseJWKS(make([]byte, MaxJWKSBytes+1)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized JWKS: got %v", err)
	}
}

// TestFileRotation: a rewritten JWKS file is read again; a broken rewrite
// keeps the keys there were and is reported.
func TestFileRotation(t *testing.T) {
	t.Parallel()
	k := keys()
	f := writeJWKS(t, jwttest.JWKS(k["es"]))
	p := newProvider(t, Options{File: f, Poll: 50 * time.Millisecond})
	p.Start()
	defer p.Stop()
	old, rotated := k["es"].Sign(claims(nil), nil), k["ed"].Sign(claims(nil), nil)
	if _, err := p.Verify(context.Background(), old); err != nil { // and cached
		t.Fatal(err)
	}
	if _, err := p.Verify(context.Background(), rotated); err == nil || err.Reason != ReasonUnknownKey {
		t.Fatalf("before rotation: got %v, want unknown_kid", err)
	}
	os.WriteFile(f, jwttest.JWKS(k["ed"]), 0o644)
	waitFor(t, "the new key", func() bool { _, err := p.Verify(context.Background(), rotated); return err == nil })
	if _, err := p.Verify(context.Background(), old); err == nil {
		t.Fatal("the removed key still verifies")
	}
	os.WriteFile(f, []byte("{broken"), 0o644)
	waitFor(t, "the error", func() bool { return p.Status().LastError != "" })
	if _, err := p.Verify(context.Background(), rotated); err != nil {
		t.Fatalf("after a broken rewrite: %v, want the keys kept", err)
	}
	if s := p.Status(); s.Keys != 1 || !strings.Contains(s.LastError, "JWKS: invalid character") {
		t.Fatalf("status %+v", s)
	}
}

// TestFetchRefetchRateLimited: a token with a kid the set lacks causes one
// refetch, which finds a rotated key; a flood of random kids after it
// causes none within min-refetch; the interval over, one more.
func TestFetchRefetchRateLimited(t *testing.T) {
	t.Parallel()
	k := keys()
	var fetches atomic.Int32
	var doc atomic.Pointer[[]byte]
	first := jwttest.JWKS(k["es"])
	doc.Store(&first)
	var mu sync.Mutex
	clock := now
	p := newProvider(t, Options{
		Fetch: func(context.Context) ([]byte, error) {
			fetches.Add(1)
			return *doc.Load(), nil
		},
		Source: "test", Refresh: time.Hour, MinRefetch: 30 * time.Second, Timeout: time.Second,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock },
	})
	if _, err := p.Verify(context.Background(), k["es"].Sign(claims(nil), nil)); err != nil {
		t.Fatalf("first token (fetched on demand): %v", err)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	mu.Lock()
	clock = clock.Add(31 * time.Second)
	mu.Unlock()
	second := jwttest.JWKS(k["es"], k["ed"])
	doc.Store(&second)
	if _, err := p.Verify(context.Background(), k["ed"].Sign(claims(nil), nil)); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := jwttest.Key{KID: "random-" + string(rune('a'+i%26)) + time.Duration(i).String(), Alg: jose.ES256, Priv: k["es"].Priv}.Sign(claims(nil), nil)
			if _, err := p.Verify(context.Background(), tok); err == nil || err.Reason != ReasonUnknownKey {
				t.Errorf("random kid: got %v, want unknown_kid", err)
			}
		}()
	}
	wg.Wait()
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after a flood of unknown kids, want still 2", n)
	}
	mu.Lock()
	clock = clock.Add(31 * time.Second)
	mu.Unlock()
	p.Verify(context.Background(), jwttest.Key{KID: "another", Alg: jose.ES256, Priv: k["es"].Priv}.Sign(claims(nil), nil))
	if n := fetches.Load(); n != 3 {
		t.Fatalf("%d fetches after the interval, want 3", n)
	}
}

// TestFetchFailureKeepsKeys: a failed fetch keeps the keys, and with none
// loaded a token is refused with no_keys.
func TestFetchFailureKeepsKeys(t *testing.T) {
	t.Parallel()
	k := keys()
	var fail atomic.Bool
	fail.Store(true)
	p := newProvider(t, Options{
		Fetch: func(context.Context) ([]byte, error) {
			if fail.Load() {
				return nil, errors.New("connection refused")
			}
			return jwttest.JWKS(k["es"]), nil
		},
		Source: "test", Refresh: time.Hour, MinRefetch: time.Second, Timeout: time.Second, Now: time.Now,
	})
	tok := k["es"].Sign(claims(map[string]any{"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}), nil)
	if _, err := p.Verify(context.Background(), tok); err == nil || err.Reason != ReasonNoKeys {
		t.Fatalf("got %v, want no_keys", err)
	}
	if s := p.Status(); !strings.Contains(s.LastError, "connection refused") {
		t.Fatalf("status %+v", s)
	}
	fail.Store(false)
	p.Start() // fetches at once
	defer p.Stop()
	waitFor(t, "keys", func() bool { return p.Keys() == 1 })
	if _, err := p.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	time.Sleep(1100 * time.Millisecond)
	p.Verify(context.Background(), jwttest.Key{KID: "x", Alg: jose.ES256, Priv: k["es"].Priv}.Sign(claims(nil), nil)) // a failed refetch
	if _, err := p.Verify(context.Background(), tok); err != nil {
		t.Fatalf("after a failed refetch: %v, want the keys kept", err)
	}
}

// TestExtract: the token's place, several tokens, prefixes, cookies.
func TestExtract(t *testing.T) {
	t.Parallel()
	x := NewExtractor([]Source{{Header: "authorization", Prefix: "Bearer "}, {Header: "x-jwt"}, {Cookie: "session"}})
	for _, tc := range []struct {
		name   string
		h      http.Header
		token  string
		reason string
	}{
		{"none", http.Header{}, "", ""},
		{"bearer", http.Header{"Authorization": {"Bearer abc"}}, "abc", ""},
		{"scheme any case", http.Header{"Authorization": {"bEARER abc"}}, "abc", ""},
		{"basic is not a token", http.Header{"Authorization": {"Basic dXNlcjpwdw=="}}, "", ""},
		{"other header", http.Header{"X-Jwt": {"abc"}}, "abc", ""},
		{"cookie", http.Header{"Cookie": {"a=1; session=abc"}}, "abc", ""},
		{"header and cookie", http.Header{"Authorization": {"Bearer abc"}, "Cookie": {"session=abc"}}, "", ReasonMultiple},
		{"two authorization", http.Header{"Authorization": {"Bearer abc", "Bearer def"}}, "", ReasonMultiple},
		{"two cookies", http.Header{"Cookie": {"session=a; session=b"}}, "", ReasonMultiple},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, "", ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := x.Extract(tc.h)
			switch {
			case tc.reason != "" && (err == nil || err.Reason != tc.reason):
				t.Fatalf("got %v, want %s", err, tc.reason)
			case tc.reason == "" && err != nil:
				t.Fatalf("got %s", err.Reason)
			case f.Token != tc.token:
				t.Fatalf("token %q, want %q", f.Token, tc.token)
			}
		})
	}
	h := http.Header{"Cookie": {"a=1; session=abc; b=2", "session=x"}}
	Strip(h, Source{Cookie: "session"})
	if got := h["Cookie"]; len(got) != 1 || got[0] != "a=1; b=2" {
		t.Fatalf("stripped cookies %q", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCache: a token seen again skips the signature but not the claims:
// it expires on time; and a tampered copy is not taken for it.
func TestCache(t *testing.T) {
	t.Parallel()
	k := keys()
	var mu sync.Mutex
	clock := now
	p := newProvider(t, Options{File: writeJWKS(t, jwttest.JWKS(k["es"])),
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }})
	tok := k["es"].Sign(claims(map[string]any{"exp": now.Add(10 * time.Minute).Unix()}), nil)
	for range 2 {
		if _, err := p.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Verify(context.Background(), tok[:len(tok)-2]+"AA"); err == nil || err.Reason != ReasonSignature {
		t.Fatalf("tampered: got %v, want bad_signature", err)
	}
	mu.Lock()
	clock = clock.Add(12 * time.Minute)
	mu.Unlock()
	if _, err := p.Verify(context.Background(), tok); err == nil || err.Reason != ReasonExpired {
		t.Fatalf("cached token past exp: got %v, want expired", err)
	}
}

// BenchmarkVerify: an RS256 token, verified (a new token each time: the
// signature) and cached (the same token: the claims only).
func BenchmarkVerify(b *testing.B) {
	k := keys()["rs"]
	p, err := New(Options{Name: "b", Issuer: "https://issuer.test", Audiences: []string{"orders"}, ClockSkew: time.Minute,
		RequireExpiration: true, Now: func() time.Time { return now }, File: writeJWKSB(b, jwttest.JWKS(k))})
	if err != nil {
		b.Fatal(err)
	}
	tok := k.Sign(claims(nil), nil)
	b.Run("signature", func(b *testing.B) {
		for b.Loop() {
			p.cache = verified{}
			if _, err := p.Verify(context.Background(), tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.Verify(context.Background(), tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func writeJWKSB(b *testing.B, doc []byte) string {
	f := filepath.Join(b.TempDir(), "jwks.json")
	if err := os.WriteFile(f, doc, 0o644); err != nil {
		b.Fatal(err)
	}
	return f
}
