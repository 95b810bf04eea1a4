package httpproxy

import (
	"fmt"

	"github.com/attache-proxy/attache/internal/config"
)

// RateLimit is a route's local rate limit: a token bucket of Burst
// requests refilled with Requests every Per, for the route as a whole or
// for each key (Key). Limits are per attache process (per pod).
type RateLimit struct {
	Requests int             `yaml:"requests"` // added to the bucket every Per
	Per      config.Duration `yaml:"per"`      // whole seconds; default 1s
	Burst    int             `yaml:"burst"`    // the bucket's size; default Requests
	// Key gives each client its own bucket; nil: one bucket for the route.
	Key *RateLimitKey `yaml:"key"`
	// MaxKeys bounds the buckets kept with Key (least recently used go).
	MaxKeys int `yaml:"max_keys"`
	// Headers says when the RateLimit-Policy and RateLimit fields are
	// sent: "limited" (default) on 429s only, "always" on every response.
	Headers string `yaml:"headers"`
}

// RateLimitKey is what a keyed rate limit keys on: exactly one of Header,
// Claim and EndUser.
type RateLimitKey struct {
	Header  string `yaml:"header"`   // a request header's value
	Claim   string `yaml:"claim"`    // a claim of the route's verified JWT
	EndUser bool   `yaml:"end_user"` // the end user's address (as sticky.by: client_ip)
	// TrustedProxies and ForwardedHeader are as in Sticky, for EndUser.
	TrustedProxies  []config.CIDR `yaml:"trusted_proxies"`
	ForwardedHeader string        `yaml:"forwarded_header"`
}

// Rate limit defaults.
const (
	DefaultRateLimitMaxKeys = 10000
	maxRateLimitKeys        = 1000000
)

var rateLimitHeaders = []string{"limited", "always"}

// applyRateLimit fills the defaults of a route's rate limit at p.
func applyRateLimit(c *config.Check, p string, rl *RateLimit) {
	fillBucket(&rl.Per, &rl.Burst, rl.Requests)
	if rl.Headers == "" {
		rl.Headers = "limited"
	}
	if k := rl.Key; k != nil {
		if rl.MaxKeys == 0 {
			rl.MaxKeys = DefaultRateLimitMaxKeys
		}
		if k.EndUser {
			if k.TrustedProxies == nil && !c.Has(p+".key.trusted_proxies") {
				k.TrustedProxies = DefaultTrustedProxies()
			}
			if k.ForwardedHeader == "" {
				k.ForwardedHeader = DefaultForwardedHeader
			}
		}
	}
}

// rateLimit validates a route's rate_limit at path p.
func validateRateLimit(c *config.Check, p string, rl *RateLimit) {
	validateBucket(c, p, rl.Requests, rl.Per, rl.Burst)
	c.OneOf(p+".headers", "headers mode", rl.Headers, rateLimitHeaders)
	k := rl.Key
	if k == nil {
		if rl.MaxKeys != 0 {
			c.Errorf(p+".max_keys", "not used without key (the route has one bucket)")
		}
		return
	}
	if rl.MaxKeys < 1 || rl.MaxKeys > maxRateLimitKeys {
		c.Errorf(p+".max_keys", "must be 1-%d", maxRateLimitKeys)
	}
	kp := p + ".key"
	n := 0
	for _, set := range []bool{k.Header != "", k.Claim != "", k.EndUser} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		c.Errorf(kp, "needs one of header, claim or end_user")
	case n > 1:
		c.Errorf(kp, "give only one of header, claim or end_user")
	}
	if k.Header != "" && !config.ValidHeaderName(k.Header) {
		c.Errorf(kp+".header", "%q: not a valid header name", k.Header)
	}
	if k.Claim != "" && !config.ValidHeaderValue(k.Claim) {
		c.Errorf(kp+".claim", "holds a control character")
	}
	if !k.EndUser {
		if k.TrustedProxies != nil {
			c.Errorf(kp+".trusted_proxies", "only with end_user: true")
		}
		if k.ForwardedHeader != "" {
			c.Errorf(kp+".forwarded_header", "only with end_user: true")
		}
		return
	}
	if !config.ValidHeaderName(k.ForwardedHeader) {
		c.Errorf(kp+".forwarded_header", "%q: not a valid header name", k.ForwardedHeader)
	}
	for i, a := range k.TrustedProxies {
		for _, b := range k.TrustedProxies[:i] {
			if b.Prefix().Overlaps(a.Prefix()) {
				c.Errorf(fmt.Sprintf("%s.trusted_proxies[%d]", kp, i), "%s overlaps %s, listed before it", a, b)
				break
			}
		}
	}
}
