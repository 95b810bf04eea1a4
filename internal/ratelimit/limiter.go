package ratelimit

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Limiter limits requests by one bucket, or by a bucket per key. The keys
// it remembers are bounded by MaxKeys: a new key past that takes the
// bucket of the key used least recently, which starts again full (a key
// unused that long has usually refilled anyway). Requests without a key
// share one bucket of their own. Safe for concurrent use.
type Limiter struct {
	p       Policy
	maxKeys int

	mu     sync.Mutex
	shared bucket
	keys   map[uint64]*entry
	lru    entry // sentinel: lru.next is the most recently used

	seed      maphash.Seed
	evictions atomic.Uint64
}

// entry is a key's bucket on the LRU list.
type entry struct {
	key        uint64
	b          bucket
	prev, next *entry
}

// NewLimiter returns a limiter of policy p, remembering at most maxKeys
// keys (at least 1).
func NewLimiter(p Policy, maxKeys int) *Limiter {
	l := &Limiter{p: p, maxKeys: max(maxKeys, 1), keys: map[uint64]*entry{}, seed: maphash.MakeSeed()}
	l.lru.next, l.lru.prev = &l.lru, &l.lru
	return l
}

// Policy is the limiter's policy.
func (l *Limiter) Policy() Policy { return l.p }

// Key is the key of s. Keys are hashed with a seed of the limiter's own,
// chosen at random, so that a client cannot make up a key that shares
// another's bucket; a key is never stored, so the memory of the set is
// bounded whatever the keys' length.
func (l *Limiter) Key(s string) uint64 { return maphash.String(l.seed, s) }

// KeyBytes is Key of a key held in bytes.
func (l *Limiter) KeyBytes(b []byte) uint64 { return maphash.Bytes(l.seed, b) }

// Take takes a token at now from the shared bucket: the only one of a
// limiter without keys, and the one of requests without a key.
func (l *Limiter) Take(now int64) Decision {
	l.mu.Lock()
	d := l.shared.take(l.p, now)
	l.mu.Unlock()
	return d
}

// TakeKey takes a token at now from key's bucket (Key, KeyBytes).
func (l *Limiter) TakeKey(key uint64, now int64) Decision {
	l.mu.Lock()
	e := l.keys[key]
	switch {
	case e != nil:
		e.unlink()
	case len(l.keys) < l.maxKeys:
		e = &entry{key: key}
		l.keys[key] = e
	default: // full: the least recently used key gives its bucket
		e = l.lru.prev
		e.unlink()
		delete(l.keys, e.key)
		*e = entry{key: key}
		l.keys[key] = e
		l.evictions.Add(1)
	}
	e.pushFront(&l.lru)
	d := e.b.take(l.p, now)
	l.mu.Unlock()
	return d
}

// Keys is the number of keys remembered.
func (l *Limiter) Keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// Evictions is the number of keys forgotten to make room for others.
func (l *Limiter) Evictions() uint64 { return l.evictions.Load() }

func (e *entry) unlink() {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (e *entry) pushFront(head *entry) {
	e.prev, e.next = head, head.next
	head.next.prev = e
	head.next = e
}
