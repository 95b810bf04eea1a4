// Package jwtauth verifies JSON Web Tokens (RFC 7519) against an issuer's
// JSON Web Key Set, as Envoy's jwt_authn does: signed (JWS compact) tokens
// only, asymmetric algorithms only, the key chosen by kid from the
// provider's own keys (never from the token's jku, x5u or jwk headers),
// then iss, aud, exp, nbf and iat with a clock skew.
//
// A Provider holds one issuer's keys. They come from a file, re-read when
// it changes, or from a fetch function (an HTTP GET through a cluster),
// called every refresh interval, and again, at most once per
// min-refetch interval, when a token names a key the set does not have:
// keys rotate without a restart, and a flood of tokens with random key IDs
// costs the issuer no more than one request per interval. A failed read or
// fetch keeps the keys there were.
//
// The crypto is go-jose's; this package decides what is acceptable.
package jwtauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/attache-proxy/attache/internal/watch"
)

// MaxTokenBytes bounds a token: a larger one is refused before it is
// decoded.
const MaxTokenBytes = 8 << 10

// maxKidBytes bounds a token's kid.
const maxKidBytes = 256

// Reasons a request is refused, the result label of the metrics. Each
// has a fixed description, sent in error_description.
const (
	ReasonMissing        = "missing"         // no token where one is required
	ReasonMultiple       = "multiple_tokens" // more than one token in the request
	ReasonTooLarge       = "too_large"
	ReasonMalformed      = "malformed"
	ReasonAlgorithm      = "algorithm"   // none, HMAC or another algorithm not accepted
	ReasonCrit           = "crit_header" // a critical header extension
	ReasonUnknownKey     = "unknown_kid" // no key of the set fits the token
	ReasonNoKeys         = "no_keys"     // the key set never loaded
	ReasonSignature      = "bad_signature"
	ReasonExpired        = "expired"
	ReasonNotYetValid    = "not_yet_valid"
	ReasonNoExpiration   = "no_expiration"
	ReasonIssuer         = "issuer"
	ReasonAudience       = "audience"
	ReasonClaimMalformed = "bad_claim" // exp, nbf, iat, iss or aud of the wrong type
)

// Reasons is every reason, in a fixed order.
var Reasons = []string{ReasonMissing, ReasonMultiple, ReasonTooLarge, ReasonMalformed, ReasonAlgorithm, ReasonCrit,
	ReasonUnknownKey, ReasonNoKeys, ReasonSignature, ReasonExpired, ReasonNotYetValid, ReasonNoExpiration,
	ReasonIssuer, ReasonAudience, ReasonClaimMalformed}

var descriptions = map[string]string{
	ReasonMissing:        "a token is required",
	ReasonMultiple:       "more than one token in the request",
	ReasonTooLarge:       "token too large",
	ReasonMalformed:      "malformed token",
	ReasonAlgorithm:      "signature algorithm not accepted",
	ReasonCrit:           "critical header extension not supported",
	ReasonUnknownKey:     "no key for the token's kid and alg",
	ReasonNoKeys:         "no verification keys available",
	ReasonSignature:      "signature verification failed",
	ReasonExpired:        "token expired",
	ReasonNotYetValid:    "token not yet valid",
	ReasonNoExpiration:   "token has no expiration",
	ReasonIssuer:         "issuer not accepted",
	ReasonAudience:       "audience not accepted",
	ReasonClaimMalformed: "malformed claim",
}

// Error is why a token was refused: Reason is one of the Reason
// constants.
type Error struct{ Reason string }

func (e *Error) Error() string { return descriptions[e.Reason] }

// Description is the error's fixed text, safe to send to the client.
func (e *Error) Description() string { return descriptions[e.Reason] }

func fail(reason string) *Error { return &Error{Reason: reason} }

// Options configure a Provider.
type Options struct {
	Name      string
	Issuer    string   // empty: any
	Audiences []string // empty: any
	ClockSkew time.Duration
	// RequireExpiration refuses tokens without exp.
	RequireExpiration bool

	// File is a JWKS file, re-read when it changes; or Fetch gets the
	// document (bounded by MaxJWKSBytes) every Refresh, and on an unknown
	// kid at most once per MinRefetch, each call within Timeout.
	File       string
	Fetch      func(ctx context.Context) ([]byte, error)
	Source     string // how Status names where the keys come from
	Refresh    time.Duration
	MinRefetch time.Duration
	Timeout    time.Duration

	// Poll backs up the file watch; default 5s.
	Poll time.Duration
	// Loaded is told of each read or fetch (nil: not told).
	Loaded func(err error)
	Now    func() time.Time // default time.Now
	Log    *slog.Logger
}

// Provider verifies one issuer's tokens. Verify is safe for concurrent
// use; Start and Stop are called once each.
type Provider struct {
	o    Options
	keys atomic.Pointer[keySet]

	mu        sync.Mutex
	lastStart time.Time     // of the last fetch
	inflight  chan struct{} // closed when the fetch under way ends; nil: none
	lastLoad  time.Time     // last successful load
	lastErr   string
	lastErrAt time.Time

	ctx    context.Context // ends at Stop; fetches run under it
	cancel context.CancelFunc
	done   chan struct{}

	cache verified
}

// cacheSize bounds the verified tokens a provider remembers.
const cacheSize = 1024

// verified remembers tokens whose signature checked out, by the SHA-256
// of the token, with the key set that checked them: a token seen again
// skips the signature (the costly part) while that set is in force, and
// has its claims checked again, since time moves. (Envoy's jwt_cache.)
type verified struct {
	mu sync.Mutex
	m  map[[32]byte]cached
}

type cached struct {
	ks     *keySet
	claims map[string]any
}

func (v *verified) get(h [32]byte, ks *keySet) map[string]any {
	v.mu.Lock()
	defer v.mu.Unlock()
	if c, ok := v.m[h]; ok && c.ks == ks {
		return c.claims
	}
	return nil
}

func (v *verified) put(h [32]byte, ks *keySet, claims map[string]any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = make(map[[32]byte]cached, cacheSize)
	}
	if len(v.m) >= cacheSize {
		for k := range v.m { // map order: a random victim
			delete(v.m, k)
			break
		}
	}
	v.m[h] = cached{ks: ks, claims: claims}
}

// New returns a provider. A file is read now: an unreadable file or one
// without a usable key is an error. Fetched keys come after Start.
func New(o Options) (*Provider, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Poll == 0 {
		o.Poll = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	p := &Provider{o: o, ctx: context.Background()}
	if o.File != "" {
		if err := p.readFile(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Name is the provider's name.
func (p *Provider) Name() string { return p.o.Name }

// Start watches the file or starts the refresh loop.
func (p *Provider) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		if p.o.File != "" {
			// Follow reads once more at the start: a change between New and
			// Start is not missed.
			watch.Follow(ctx, []string{p.o.File}, p.o.Poll, func() { p.readFile() })
			return
		}
		p.refreshLoop(ctx)
	}()
}

// Stop ends the watch or the refresh loop, and waits for it.
func (p *Provider) Stop() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
}

func (p *Provider) readFile() error {
	b, err := readLimited(p.o.File)
	var ks *keySet
	if err == nil {
		ks, err = parseJWKS(b)
	}
	if err != nil {
		err = fmt.Errorf("jwt provider %q: %s: %w", p.o.Name, p.o.File, err)
	}
	p.loaded(ks, err)
	return err
}

func readLimited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxJWKSBytes+1))
	if err == nil && len(b) > MaxJWKSBytes {
		err = fmt.Errorf("larger than %d bytes", MaxJWKSBytes)
	}
	return b, err
}

// loaded records a read or fetch: new keys, or the error (the keys there
// were stay).
func (p *Provider) loaded(ks *keySet, err error) {
	now := p.o.Now()
	p.mu.Lock()
	if err != nil {
		p.lastErr, p.lastErrAt = err.Error(), now
	} else {
		p.keys.Store(ks)
		p.lastLoad, p.lastErr = now, ""
	}
	p.mu.Unlock()
	if err != nil {
		p.o.Log.Warn("jwks", "provider", p.o.Name, "error", err)
	} else {
		p.o.Log.Debug("jwks loaded", "provider", p.o.Name, "keys", len(ks.keys), "skipped", ks.skipped)
	}
	if p.o.Loaded != nil {
		p.o.Loaded(err)
	}
}

// refreshLoop fetches at once, then every Refresh; after a failure it
// tries again sooner, backing off from 1s to at most Refresh.
func (p *Provider) refreshLoop(ctx context.Context) {
	backoff := time.Second
	for {
		next := p.o.Refresh
		if err := p.fetch(ctx, false); err != nil {
			next = min(backoff, p.o.Refresh)
			backoff = min(2*backoff, time.Minute)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

var errRateLimited = errors.New("refetch rate-limited")

// fetch gets the key set, or waits for the fetch under way. A refetch
// (for an unknown kid) is refused within MinRefetch of the last fetch's
// start.
func (p *Provider) fetch(ctx context.Context, refetch bool) error {
	p.mu.Lock()
	if ch := p.inflight; ch != nil {
		p.mu.Unlock()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	now := p.o.Now()
	if refetch && !p.lastStart.IsZero() && now.Sub(p.lastStart) < p.o.MinRefetch {
		p.mu.Unlock()
		return errRateLimited
	}
	ch := make(chan struct{})
	p.inflight, p.lastStart = ch, now
	base := p.ctx
	p.mu.Unlock()
	// Not the request's context: the fetch serves every request waiting.
	fctx, cancel := context.WithTimeout(base, p.o.Timeout)
	b, err := p.o.Fetch(fctx)
	cancel()
	var ks *keySet
	if err == nil {
		ks, err = parseJWKS(b)
	}
	if err != nil {
		err = fmt.Errorf("jwt provider %q: fetch %s: %w", p.o.Name, p.o.Source, err)
	}
	p.loaded(ks, err)
	p.mu.Lock()
	p.inflight = nil
	p.mu.Unlock()
	close(ch)
	return err
}

// header is what is read of a token's protected header before go-jose
// parses it.
type header struct {
	Alg  string          `json:"alg"`
	Crit json.RawMessage `json:"crit"`
}

// Verify checks a token and returns its claims, which the caller must not
// modify (they may be shared with other requests that carried the same
// token). ctx bounds the wait for a refetch of the keys, when the token
// names a key the set lacks.
func (p *Provider) Verify(ctx context.Context, token string) (map[string]any, *Error) {
	if len(token) > MaxTokenBytes {
		return nil, fail(ReasonTooLarge)
	}
	sum := sha256.Sum256([]byte(token))
	if c := p.cache.get(sum, p.keys.Load()); c != nil {
		if e := p.checkClaims(c); e != nil {
			return nil, e
		}
		return c, nil
	}
	if !compactJWS(token) {
		return nil, fail(ReasonMalformed)
	}
	hb, err := base64.RawURLEncoding.DecodeString(token[:bytes.IndexByte([]byte(token), '.')])
	var h header
	if err != nil || json.Unmarshal(hb, &h) != nil {
		return nil, fail(ReasonMalformed)
	}
	if h.Crit != nil {
		return nil, fail(ReasonCrit) // no extension is understood (RFC 7515 4.1.11)
	}
	if !slices.Contains(Algorithms, jose.SignatureAlgorithm(h.Alg)) {
		return nil, fail(ReasonAlgorithm)
	}
	jws, err := jose.ParseSignedCompact(token, Algorithms)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, fail(ReasonMalformed)
	}
	sh := jws.Signatures[0].Protected
	alg := jose.SignatureAlgorithm(sh.Algorithm)
	if string(alg) != h.Alg {
		return nil, fail(ReasonMalformed) // the two parsers disagree: duplicate names
	}
	if len(sh.KeyID) > maxKidBytes {
		return nil, fail(ReasonMalformed)
	}
	ks := p.keys.Load()
	cands := ks.candidates(alg, sh.KeyID)
	if len(cands) == 0 && p.o.Fetch != nil {
		// A kid (or an alg) the keys lack: the issuer may have rotated.
		if p.fetch(ctx, true) == nil {
			ks = p.keys.Load()
			cands = ks.candidates(alg, sh.KeyID)
		}
	}
	if len(cands) == 0 {
		if ks == nil {
			return nil, fail(ReasonNoKeys)
		}
		return nil, fail(ReasonUnknownKey)
	}
	var payload []byte
	for _, k := range cands {
		if payload, err = jws.Verify(k.pub); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fail(ReasonSignature)
	}
	var claims map[string]any
	if json.Unmarshal(payload, &claims) != nil || claims == nil {
		return nil, fail(ReasonMalformed)
	}
	if e := p.checkClaims(claims); e != nil {
		return nil, e
	}
	p.cache.put(sum, ks, claims)
	return claims, nil
}

// compactJWS reports whether s is three base64url segments.
func compactJWS(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2 && s[0] != '.'
}

// checkClaims checks iss, aud, exp, nbf and iat (RFC 7519 4.1).
func (p *Provider) checkClaims(c map[string]any) *Error {
	now := p.o.Now()
	skew := p.o.ClockSkew
	exp, hasExp, ok := numericDate(c, "exp")
	if !ok {
		return fail(ReasonClaimMalformed)
	}
	switch {
	case !hasExp && p.o.RequireExpiration:
		return fail(ReasonNoExpiration)
	case hasExp && !now.Before(exp.Add(skew)):
		return fail(ReasonExpired)
	}
	for _, name := range []string{"nbf", "iat"} {
		t, has, ok := numericDate(c, name)
		if !ok {
			return fail(ReasonClaimMalformed)
		}
		if has && now.Add(skew).Before(t) {
			return fail(ReasonNotYetValid)
		}
	}
	if iss, has := c["iss"]; has {
		if _, ok := iss.(string); !ok {
			return fail(ReasonClaimMalformed)
		}
	}
	if p.o.Issuer != "" && c["iss"] != p.o.Issuer {
		return fail(ReasonIssuer)
	}
	var aud []string
	switch a := c["aud"].(type) {
	case nil:
	case string:
		aud = []string{a}
	case []any:
		for _, v := range a {
			s, ok := v.(string)
			if !ok {
				return fail(ReasonClaimMalformed)
			}
			aud = append(aud, s)
		}
	default:
		return fail(ReasonClaimMalformed)
	}
	if len(p.o.Audiences) > 0 && !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(p.o.Audiences, a) }) {
		return fail(ReasonAudience)
	}
	return nil
}

// numericDate reads a NumericDate claim; ok false when it is not a
// finite number.
func numericDate(c map[string]any, name string) (t time.Time, has, ok bool) {
	v, has := c[name]
	if !has {
		return time.Time{}, false, true
	}
	f, isNum := v.(float64)
	if !isNum || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1<<53 {
		return time.Time{}, true, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, true
}

// Status is a provider's key set as /status shows it.
type Status struct {
	Name        string     `json:"name"`
	Source      string     `json:"source"`
	Keys        int        `json:"keys"`
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// Status reports the keys loaded and the last load and error.
func (p *Provider) Status() Status {
	s := Status{Name: p.o.Name, Source: p.o.Source}
	if ks := p.keys.Load(); ks != nil {
		s.Keys = len(ks.keys)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.lastLoad.IsZero() {
		t := p.lastLoad.UTC()
		s.LastRefresh = &t
	}
	if p.lastErr != "" {
		t := p.lastErrAt.UTC()
		s.LastError, s.LastErrorAt = p.lastErr, &t
	}
	return s
}

// Keys is how many keys are loaded.
func (p *Provider) Keys() int {
	if ks := p.keys.Load(); ks != nil {
		return len(ks.keys)
	}
	return 0
}
