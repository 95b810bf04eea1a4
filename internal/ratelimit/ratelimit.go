// Package ratelimit is token buckets: a Limiter for requests coming in
// (one bucket, or one per key with a bounded, least-recently-used set of
// keys) and a Queue for requests going out, which may wait a bounded time
// for a token rather than fail.
//
// A bucket holds at most Burst tokens and gains Rate tokens a second; a
// request takes one. Time is given by the caller as nanoseconds on one
// clock (time.Now().UnixNano() in attache), so that tests drive it; a clock
// that goes back adds nothing and takes nothing.
package ratelimit

import (
	"math"
	"time"
)

// Policy is the shape of a bucket: Burst tokens at most, refilled at Rate
// tokens a second. Burst is at least 1 and Rate positive.
type Policy struct {
	Rate  float64 // tokens a second
	Burst int     // bucket size: requests allowed at once
}

// PolicyOf is the policy of requests per period with a bucket of burst.
func PolicyOf(requests int, per time.Duration, burst int) Policy {
	return Policy{Rate: float64(requests) / per.Seconds(), Burst: burst}
}

// Decision is the outcome of taking a token.
type Decision struct {
	// OK: a token was taken and the request may go.
	OK bool
	// Remaining is the whole tokens left after this request (0 when
	// refused).
	Remaining int
	// RetryAfter is how long until a token is there, when refused; zero
	// otherwise.
	RetryAfter time.Duration
	// Reset is how long until the bucket is full again.
	Reset time.Duration
}

// bucket is one token bucket. Its zero value is not ready: fill sets it
// full at its first use. Not safe for concurrent use.
type bucket struct {
	tokens float64
	last   int64 // when tokens was last brought up to date
	used   bool  // false: never used (full)
}

// refill brings b up to now under p.
func (b *bucket) refill(p Policy, now int64) {
	if !b.used {
		b.tokens, b.last, b.used = float64(p.Burst), now, true
		return
	}
	if d := now - b.last; d > 0 {
		b.tokens = math.Min(float64(p.Burst), b.tokens+float64(d)*p.Rate/1e9)
		b.last = now
	}
}

// take takes a token at now if there is one.
func (b *bucket) take(p Policy, now int64) Decision {
	b.refill(p, now)
	d := Decision{}
	if b.tokens >= 1 {
		b.tokens--
		d.OK = true
		d.Remaining = int(b.tokens)
	} else {
		d.RetryAfter = p.until(1 - b.tokens)
	}
	d.Reset = p.until(float64(p.Burst) - b.tokens)
	return d
}

// until is how long p takes to add n tokens (rounded up to the
// nanosecond; zero for n <= 0).
func (p Policy) until(n float64) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(n / p.Rate * 1e9))
}

// Seconds is d in whole seconds, rounded up: the unit of Retry-After and
// of the RateLimit header fields. A positive d is at least 1.
func Seconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
