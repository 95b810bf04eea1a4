package config

import (
	"fmt"
	"time"
)

// RateLimit is a route's local rate limit: a token bucket of Burst
// requests refilled with Requests every Per, for the route as a whole or
// for each key (Key). Limits are per attache process (per pod).
type RateLimit struct {
	Requests int      `yaml:"requests"` // added to the bucket every Per
	Per      Duration `yaml:"per"`      // whole seconds; default 1s
	Burst    int      `yaml:"burst"`    // the bucket's size; default Requests
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
	TrustedProxies  []CIDR `yaml:"trusted_proxies"`
	ForwardedHeader string `yaml:"forwarded_header"`
}

// UpstreamRateLimit is a cluster's limit on what attache sends it, over
// every route and listener: a token bucket, with a queue where requests
// wait briefly for a token.
type UpstreamRateLimit struct {
	Requests int      `yaml:"requests"`
	Per      Duration `yaml:"per"`
	Burst    int      `yaml:"burst"`
	// Queue lets requests wait for a token; nil: refused at once.
	Queue *RateLimitQueue `yaml:"queue"`
}

// RateLimitQueue bounds the requests waiting for a token of an upstream
// rate limit: at most Max at once, each at most Timeout.
type RateLimitQueue struct {
	Max     int      `yaml:"max"`
	Timeout Duration `yaml:"timeout"`
}

// Rate limit defaults.
const (
	DefaultRateLimitPer     = time.Second
	DefaultRateLimitMaxKeys = 10000
	DefaultRateLimitQueue   = 100
	DefaultRateLimitWait    = time.Second
	maxRateLimitKeys        = 1000000
)

var rateLimitHeaders = []string{"limited", "always"}

// applyRateLimits fills the defaults of every rate limit.
func (c *Config) applyRateLimits() {
	for i := range c.Listeners {
		for j := range c.Listeners[i].Routes {
			rl := c.Listeners[i].Routes[j].RateLimit
			if rl == nil {
				continue
			}
			p := fmt.Sprintf("listeners[%d].routes[%d].rate_limit", i, j)
			rl.fill(&rl.Per, &rl.Burst)
			if rl.Headers == "" {
				rl.Headers = "limited"
			}
			if k := rl.Key; k != nil {
				if rl.MaxKeys == 0 {
					rl.MaxKeys = DefaultRateLimitMaxKeys
				}
				if k.EndUser {
					if k.TrustedProxies == nil && !c.has(p+".key.trusted_proxies") {
						k.TrustedProxies = DefaultTrustedProxies()
					}
					if k.ForwardedHeader == "" {
						k.ForwardedHeader = DefaultForwardedHeader
					}
				}
			}
		}
	}
	for i := range c.Clusters {
		rl := c.Clusters[i].RateLimit
		if rl == nil {
			continue
		}
		(&RateLimit{Requests: rl.Requests}).fill(&rl.Per, &rl.Burst)
		if q := rl.Queue; q != nil {
			if q.Max == 0 {
				q.Max = DefaultRateLimitQueue
			}
			if q.Timeout == 0 {
				q.Timeout = Duration(DefaultRateLimitWait)
			}
		}
	}
}

// fill sets per and burst to their defaults: a second, and the requests
// of one period.
func (rl *RateLimit) fill(per *Duration, burst *int) {
	if *per == 0 {
		*per = Duration(DefaultRateLimitPer)
	}
	if *burst == 0 {
		*burst = rl.Requests
	}
}

// bucket validates the bucket of a rate limit at path p.
func (v *validator) bucket(p string, requests int, per Duration, burst int) {
	if requests < 1 {
		v.errorf(p+".requests", "must be positive (requests allowed each per)")
	}
	if per.D() < time.Second || per.D()%time.Second != 0 {
		v.errorf(p+".per", "%s: must be a whole number of seconds (1s, 1m, 1h); for 10 per 100ms write requests: 100, per: 1s, burst: 10", per.D())
	}
	if burst < 1 && (requests >= 1 || burst != requests) { // (a burst left out is requests)
		v.errorf(p+".burst", "must be positive (requests allowed at once)")
	}
}

// rateLimit validates a route's rate_limit at path p.
func (v *validator) rateLimit(p string, rl *RateLimit) {
	v.bucket(p, rl.Requests, rl.Per, rl.Burst)
	v.oneOf(p+".headers", "headers mode", rl.Headers, rateLimitHeaders)
	k := rl.Key
	if k == nil {
		if rl.MaxKeys != 0 {
			v.errorf(p+".max_keys", "not used without key (the route has one bucket)")
		}
		return
	}
	if rl.MaxKeys < 1 || rl.MaxKeys > maxRateLimitKeys {
		v.errorf(p+".max_keys", "must be 1-%d", maxRateLimitKeys)
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
		v.errorf(kp, "needs one of header, claim or end_user")
	case n > 1:
		v.errorf(kp, "give only one of header, claim or end_user")
	}
	if k.Header != "" && !tokenPattern.MatchString(k.Header) {
		v.errorf(kp+".header", "%q: not a valid header name", k.Header)
	}
	if k.Claim != "" && !validHeaderValue(k.Claim) {
		v.errorf(kp+".claim", "holds a control character")
	}
	if !k.EndUser {
		if k.TrustedProxies != nil {
			v.errorf(kp+".trusted_proxies", "only with end_user: true")
		}
		if k.ForwardedHeader != "" {
			v.errorf(kp+".forwarded_header", "only with end_user: true")
		}
		return
	}
	if !tokenPattern.MatchString(k.ForwardedHeader) {
		v.errorf(kp+".forwarded_header", "%q: not a valid header name", k.ForwardedHeader)
	}
	for i, a := range k.TrustedProxies {
		for _, b := range k.TrustedProxies[:i] {
			if b.Prefix().Overlaps(a.Prefix()) {
				v.errorf(fmt.Sprintf("%s.trusted_proxies[%d]", kp, i), "%s overlaps %s, listed before it", a, b)
				break
			}
		}
	}
}

// upstreamRateLimit validates a cluster's rate_limit at path p.
func (v *validator) upstreamRateLimit(p string, rl *UpstreamRateLimit) {
	v.bucket(p, rl.Requests, rl.Per, rl.Burst)
	if q := rl.Queue; q != nil {
		if q.Max < 1 {
			v.errorf(p+".queue.max", "must be positive (leave queue out to refuse at once)")
		}
		if q.Timeout <= 0 {
			v.errorf(p+".queue.timeout", "must be positive")
		}
	}
}
