// Package breaker is a classic circuit breaker:
//
//	closed ──(consecutive failures reach the limit)──► open
//	open ──(open_for has passed)──► half-open
//	half-open: one probe request is let through, all others refused;
//	  probe succeeds ──► closed;  probe fails ──► open again
//
// The zero value is not usable; use New. A Breaker is safe for concurrent
// use. The clock is injected for tests.
package breaker

import (
	"sync"
	"time"
)

// State is the breaker's state.
type State int

const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "closed"
}

// Breaker counts consecutive failures and refuses requests while open.
type Breaker struct {
	limit   int
	openFor time.Duration
	now     func() time.Time

	mu       sync.Mutex
	state    State
	fails    int
	openedAt time.Time
	probing  bool
	onChange func(State)
}

// New returns a closed breaker that opens after limit consecutive failures
// for openFor. now may be nil (time.Now); onChange may be nil.
func New(limit int, openFor time.Duration, now func() time.Time, onChange func(State)) *Breaker {
	if now == nil {
		now = time.Now
	}
	return &Breaker{limit: limit, openFor: openFor, now: now, onChange: onChange}
}

// Allow reports whether a request may go now. When it returns true the
// caller must report the outcome with Done exactly once.
func (b *Breaker) Allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Closed:
		return true
	case Open:
		if b.now().Sub(b.openedAt) < b.openFor {
			return false
		}
		b.set(HalfOpen)
		fallthrough
	default: // half-open: one probe at a time
		if b.probing {
			return false
		}
		b.probing = true
		return true
	}
}

// Done reports the outcome of an allowed request.
func (b *Breaker) Done(ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case HalfOpen:
		b.probing = false
		if ok {
			b.fails = 0
			b.set(Closed)
		} else {
			b.openedAt = b.now()
			b.set(Open)
		}
	case Closed:
		if ok {
			b.fails = 0
			return
		}
		b.fails++
		if b.fails >= b.limit {
			b.openedAt = b.now()
			b.set(Open)
		}
	}
}

// State returns the current state (an open breaker whose time is up reads
// as half-open).
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == Open && b.now().Sub(b.openedAt) >= b.openFor {
		return HalfOpen
	}
	return b.state
}

func (b *Breaker) set(s State) {
	if b.state == s {
		return
	}
	b.state = s
	if b.onChange != nil {
		b.onChange(s)
	}
}
