package jwtauth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// Limits on what a JWKS document may hold.
const (
	// MaxJWKSBytes bounds a JWKS document, read from a file or fetched.
	MaxJWKSBytes = 1 << 20
	// MaxKeys bounds the keys kept of one document.
	MaxKeys = 100
	// minRSABits is the smallest RSA modulus accepted (RFC 7518 3.3).
	minRSABits = 2048
)

// key is one verification key of a JWKS.
type key struct {
	kid string
	alg jose.SignatureAlgorithm // the JWK's own alg; empty: any its type allows
	pub any                     // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// keySet is a parsed JWKS: its usable keys, and how many it had that were
// not (symmetric, encryption-only, unsupported or malformed).
type keySet struct {
	keys    []key
	skipped int
}

// parseJWKS reads a JWKS document (RFC 7517 5): the public signature keys
// of types RSA, EC and OKP (Ed25519). Symmetric keys are never kept, so
// that no token can be checked with HMAC; a key with use other than "sig"
// is skipped, and a private key contributes only its public half. It
// fails when the document holds no usable key.
func parseJWKS(b []byte) (*keySet, error) {
	if len(b) > MaxJWKSBytes {
		return nil, fmt.Errorf("JWKS larger than %d bytes", MaxJWKSBytes)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`JWKS: no "keys" array`)
	}
	ks := &keySet{}
	for _, raw := range doc.Keys {
		k, ok := parseKey(raw)
		if !ok || len(ks.keys) == MaxKeys {
			ks.skipped++
			continue
		}
		ks.keys = append(ks.keys, k)
	}
	if len(ks.keys) == 0 {
		return nil, fmt.Errorf("JWKS: no usable signature key (%d skipped: only RSA, EC and Ed25519 public keys with use sig are used)", ks.skipped)
	}
	return ks, nil
}

// parseKey reads one JWK; false when it is not a usable signature key.
func parseKey(raw json.RawMessage) (key, bool) {
	var meta struct {
		Kty string `json:"kty"`
		Use string `json:"use"`
	}
	if json.Unmarshal(raw, &meta) != nil || meta.Kty == "oct" || meta.Use != "" && meta.Use != "sig" {
		return key{}, false
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil || !jwk.Valid() {
		return key{}, false
	}
	k := key{kid: jwk.KeyID, alg: jose.SignatureAlgorithm(jwk.Algorithm)}
	switch p := jwk.Key.(type) {
	case *rsa.PublicKey:
		k.pub = p
	case *rsa.PrivateKey:
		k.pub = &p.PublicKey
	case *ecdsa.PublicKey:
		k.pub = p
	case *ecdsa.PrivateKey:
		k.pub = &p.PublicKey
	case ed25519.PublicKey:
		k.pub = p
	case ed25519.PrivateKey:
		k.pub = p.Public()
	default:
		return key{}, false
	}
	if r, ok := k.pub.(*rsa.PublicKey); ok && r.N.BitLen() < minRSABits {
		return key{}, false
	}
	if k.alg != "" && !fits(k.alg, k.pub) {
		return key{}, false // a JWK whose own alg its type cannot do
	}
	return k, true
}

// Algorithms are the signature algorithms accepted: asymmetric only, so
// that neither "none" nor HMAC (keyed with a public key, RFC 8725 2.1)
// can pass.
var Algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// fits reports whether alg is made with a key of pub's type (and for
// ECDSA, its curve): a token cannot choose how a key is used.
func fits(alg jose.SignatureAlgorithm, pub any) bool {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return p.Curve == elliptic.P256()
		case jose.ES384:
			return p.Curve == elliptic.P384()
		case jose.ES512:
			return p.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}

// candidates are the keys of ks that may check a token of alg and kid
// (empty: every key that fits alg).
func (ks *keySet) candidates(alg jose.SignatureAlgorithm, kid string) []key {
	if ks == nil {
		return nil
	}
	var out []key
	for _, k := range ks.keys {
		if (kid == "" || k.kid == kid) && (k.alg == "" || k.alg == alg) && fits(alg, k.pub) {
			out = append(out, k)
		}
	}
	return out
}
