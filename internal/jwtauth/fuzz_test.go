package jwtauth

import (
	"context"
	"net/http"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/attache-proxy/attache/internal/jwtauth/jwttest"
)

// FuzzVerify feeds token extraction and verification with what a client
// controls: the Authorization and Cookie headers. Nothing may panic, and a
// token accepted must have come from the provider's key.
func FuzzVerify(f *testing.F) {
	k := jwttest.NewKey("es", jose.ES256)
	o := Options{Name: "fuzz", Issuer: "https://issuer.test", Audiences: []string{"orders"}, ClockSkew: time.Minute,
		RequireExpiration: true, Now: func() time.Time { return now }, File: ""}
	p, err := New(o)
	if err != nil {
		f.Fatal(err)
	}
	ks, err := parseJWKS(jwttest.JWKS(k))
	if err != nil {
		f.Fatal(err)
	}
	p.keys.Store(ks)
	good := k.Sign(claims(nil), nil)
	f.Add("Bearer "+good, "")
	f.Add("", "session="+good)
	f.Add("Bearer "+k.Sign(claims(map[string]any{"exp": "x"}), map[string]any{"crit": []string{"b64"}}), "")
	f.Add("Bearer "+jwttest.Unsigned(map[string]any{"alg": "none"}, claims(nil)), "")
	f.Add("Bearer "+jwttest.HMAC(map[string]any{"alg": "HS256", "kid": "es"}, claims(nil), []byte("k")), "")
	f.Add("Bearer a.b.c", "session=a.b.c; session=d")
	f.Add("bearer eyJhbGciOiJFUzI1NiJ9.e30.", "")
	x := NewExtractor([]Source{{Header: "Authorization", Prefix: "Bearer "}, {Cookie: "session"}})
	f.Fuzz(func(t *testing.T, authz, cookie string) {
		h := http.Header{}
		if authz != "" {
			h.Set("Authorization", authz)
		}
		if cookie != "" {
			h.Set("Cookie", cookie)
		}
		found, e := x.Extract(h)
		if e != nil || found.Token == "" {
			return
		}
		c, e := p.Verify(context.Background(), found.Token)
		if e == nil && c == nil {
			t.Fatal("accepted without claims")
		}
		if e == nil && found.Token != good {
			// Another encoding of the same signed content is possible
			// (base64 padding bits); its claims must be the good ones.
			if c["sub"] != "alice" {
				t.Fatalf("accepted a token not signed by the key: %q", found.Token)
			}
		}
		Strip(h, found.Source)
	})
}
