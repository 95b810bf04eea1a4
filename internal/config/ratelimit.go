package config

import (
	"time"
)

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

// Upstream rate limit defaults.
const (
	DefaultRateLimitPer   = time.Second
	DefaultRateLimitQueue = 100
	DefaultRateLimitWait  = time.Second
)

// applyRateLimits fills the defaults of every cluster's rate limit: per a
// second, burst the requests of one period.
func (c *Config) applyRateLimits() {
	for i := range c.Clusters {
		rl := c.Clusters[i].RateLimit
		if rl == nil {
			continue
		}
		FillBucket(&rl.Per, &rl.Burst, rl.Requests)
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

// FillBucket sets per and burst of a token bucket to their defaults: a
// second, and the requests of one period.
func FillBucket(per *Duration, burst *int, requests int) {
	if *per == 0 {
		*per = Duration(DefaultRateLimitPer)
	}
	if *burst == 0 {
		*burst = requests
	}
}

// Bucket checks a token bucket (requests every per, burst at once) at p.
func (c *Check) Bucket(p string, requests int, per Duration, burst int) {
	c.v.bucket(p, requests, per, burst)
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
