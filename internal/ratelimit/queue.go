package ratelimit

import (
	"context"
	"math"
	"sync"
	"time"
)

// Queue limits what is sent to an upstream by one bucket, and lets a
// request wait for its token: up to MaxWait, and with at most MaxQueue
// waiting at once. A request that would wait longer, or find the queue
// full, is refused at once. Safe for concurrent use.
//
// A waiting request holds a reservation: its token was taken in advance
// (the bucket goes below zero), so that waiters are served in order at
// the policy's rate and a newcomer knows at once how long it would wait.
// A reservation given up (the client went away) gives its token back.
type Queue struct {
	p        Policy
	maxQueue int
	maxWait  time.Duration

	mu      sync.Mutex
	b       bucket
	waiting int
}

// NewQueue returns a queue of policy p where at most maxQueue requests
// wait (0: none wait) for at most maxWait.
func NewQueue(p Policy, maxQueue int, maxWait time.Duration) *Queue {
	return &Queue{p: p, maxQueue: maxQueue, maxWait: maxWait}
}

// Policy is the queue's policy.
func (q *Queue) Policy() Policy { return q.p }

// Limits are the queue's bounds: waiters at once and the longest wait.
func (q *Queue) Limits() (maxQueue int, maxWait time.Duration) { return q.maxQueue, q.maxWait }

// Reservation is a request's place in a Queue.
type Reservation struct {
	// Delay is how long the request waits for its token (0: it has it).
	Delay time.Duration
	q     *Queue
}

// Reserve takes a token at now, or reserves one no later than the
// smaller of the queue's MaxWait and limit (limit <= 0: no extra bound;
// a route's time left, say). ok false: refused, and retryAfter is how
// long until a token would be free for a request that came then. A
// reservation with a Delay must end with Wait or Cancel.
func (q *Queue) Reserve(now int64, limit time.Duration) (r Reservation, ok bool, retryAfter time.Duration) {
	wait := q.maxWait
	if limit > 0 && limit < wait {
		wait = limit
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.b.refill(q.p, now)
	if q.b.tokens >= 1 {
		q.b.tokens--
		return Reservation{q: q}, true, 0
	}
	delay := q.p.until(1 - q.b.tokens)
	if q.waiting >= q.maxQueue || delay > wait {
		return Reservation{}, false, delay
	}
	q.b.tokens--
	q.waiting++
	return Reservation{Delay: delay, q: q}, true, 0
}

// Wait waits for a reservation's token, or until ctx ends (the
// reservation is then given up: false).
func (r Reservation) Wait(ctx context.Context) bool {
	if r.Delay <= 0 {
		return true
	}
	t := time.NewTimer(r.Delay)
	defer t.Stop()
	select {
	case <-t.C:
		r.q.leave(false)
		return true
	case <-ctx.Done():
		r.q.leave(true)
		return false
	}
}

// Cancel gives up a reservation with a Delay before it is due: it leaves
// the queue and its token goes back to the bucket.
func (r Reservation) Cancel() {
	if r.Delay > 0 {
		r.q.leave(true)
	}
}

func (q *Queue) leave(giveBack bool) {
	q.mu.Lock()
	q.waiting--
	if giveBack {
		q.b.tokens = math.Min(float64(q.p.Burst), q.b.tokens+1)
	}
	q.mu.Unlock()
}

// Waiting is the number of requests waiting for a token.
func (q *Queue) Waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiting
}
