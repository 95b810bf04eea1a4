// Package jwttest makes signing keys, JWKS documents and tokens for tests
// and benchmarks of JWT validation. Nothing here is for production use.
package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// Key is a signing key with its key ID and algorithm.
type Key struct {
	KID  string
	Alg  jose.SignatureAlgorithm
	Priv crypto.Signer
}

// NewKey generates a key for alg: RSA 2048 for RS*/PS*, the alg's curve
// for ES*, Ed25519 for EdDSA.
func NewKey(kid string, alg jose.SignatureAlgorithm) Key {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.ES384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.ES512:
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		panic("jwttest: no key for " + alg)
	}
	if err != nil {
		panic(err)
	}
	return Key{KID: kid, Alg: alg, Priv: priv}
}

// JWK is the public JWK of k; withAlg sets its alg member.
func (k Key) JWK(withAlg bool) jose.JSONWebKey {
	j := jose.JSONWebKey{Key: k.Priv.Public(), KeyID: k.KID, Use: "sig"}
	if withAlg {
		j.Algorithm = string(k.Alg)
	}
	return j
}

// JWKS is the document of keys' public halves (with their algs).
func JWKS(keys ...Key) []byte {
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, k.JWK(true))
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// Sign returns a compact JWS of claims by k, with extra protected header
// members.
func (k Key) Sign(claims map[string]any, extra map[string]any) string {
	opts := &jose.SignerOptions{}
	opts.WithType("JWT")
	for name, v := range extra {
		opts.WithHeader(jose.HeaderKey(name), v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.Alg, Key: jose.JSONWebKey{Key: k.Priv, KeyID: k.KID}}, opts)
	if err != nil {
		panic(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := s.Sign(payload)
	if err != nil {
		panic(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		panic(err)
	}
	return out
}

// Unsigned is a token with the given header and an empty signature, as
// alg none has (RFC 7519 6.1).
func Unsigned(header, claims map[string]any) string {
	return segment(header) + "." + segment(claims) + "."
}

// HMAC is a token "signed" with HS256 keyed by secret, such as the bytes
// of an issuer's public key (RFC 8725 2.1, algorithm confusion).
func HMAC(header, claims map[string]any, secret []byte) string {
	in := segment(header) + "." + segment(claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func segment(v map[string]any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprint("jwttest: ", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
