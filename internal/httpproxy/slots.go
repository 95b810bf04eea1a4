package httpproxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// connSlots is a cluster's max_connections: how many requests may use an
// upstream connection at once (one connection per request over HTTP/1.1;
// over HTTP/2 it counts requests, an approximation). A request holds a
// slot from its first try to the end of its response. One that finds none
// free waits, counted in waiting (max_pending bounds it), until a slot
// frees or the request ends. With max <= 0 there is no limit and a slot
// costs nothing. Safe for concurrent use; the zero value has no limit.
type connSlots struct {
	max     int64
	used    atomic.Int64
	waiting atomic.Int64

	mu   sync.Mutex
	wake chan struct{} // closed and replaced when a slot frees while some wait
}

// tryAcquire takes a slot if one is free.
func (s *connSlots) tryAcquire() bool {
	if s.max <= 0 {
		return true
	}
	for {
		n := s.used.Load()
		if n >= s.max {
			return false
		}
		if s.used.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release gives back a slot taken by tryAcquire or wait, and wakes the
// goroutines waiting for one.
func (s *connSlots) release() {
	if s.max <= 0 {
		return
	}
	s.used.Add(-1)
	if s.waiting.Load() > 0 {
		s.mu.Lock()
		if s.wake != nil {
			close(s.wake)
			s.wake = nil
		}
		s.mu.Unlock()
	}
}

// changed returns a channel closed at the next release.
func (s *connSlots) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wake == nil {
		s.wake = make(chan struct{})
	}
	return s.wake
}

// wait takes a slot for a request counted in waiting, blocking until one
// frees, done is closed or deadline (zero: none) passes; false when it
// gave up. Either way the request is no longer counted in waiting.
func (s *connSlots) wait(done <-chan struct{}, deadline time.Time) bool {
	defer s.waiting.Add(-1)
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	for {
		// The channel first: a release between the two is then seen.
		ch := s.changed()
		if s.tryAcquire() {
			return true
		}
		select {
		case <-ch:
		case <-done:
			return false
		case <-timeout:
			return false
		}
	}
}
