package httpcache

import (
	"container/list"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// entryOverhead is what an entry costs beyond its body, headers and key:
// the struct, its list element and map slot, roughly.
const entryOverhead = 256

// maxVariants bounds the variants (Vary) kept under one key: a lookup
// compares a request with each; the oldest goes first.
const maxVariants = 16

// entry is one stored response. It is immutable once stored (a
// revalidation stores a new entry), apart from revalidating, so that it
// is served without a lock.
type entry struct {
	key      string
	side     string   // where it was fetched (Cache.Serve)
	varyKeys []string // canonical names the response's Vary nominated
	varyVals []string // the request's values of them, joined
	status   int
	header   http.Header
	body     []byte
	size     int64

	// RFC 9111 4.2.3 inputs.
	responseTime        time.Time
	correctedInitialAge time.Duration
	freshness           time.Duration

	mustRevalidate bool // must-revalidate, or no-cache: never served stale
	noCache        bool // revalidated before every use
	staleIfError   time.Duration
	staleWhileRev  time.Duration

	revalidating atomic.Bool // a background revalidation is under way
	elem         *list.Element
}

// age is the entry's current_age at now (RFC 9111 4.2.3).
func (e *entry) age(now time.Time) time.Duration {
	return e.correctedInitialAge + max(0, now.Sub(e.responseTime))
}

// etag and lastModified are the entry's validators ("" when none).
func (e *entry) etag() string         { return e.header.Get("Etag") }
func (e *entry) lastModified() string { return e.header.Get("Last-Modified") }

// matches reports whether a request with header h selects the entry (RFC
// 9111 4.1).
func (e *entry) matches(side string, h http.Header) bool {
	if e.side != side {
		return false
	}
	for i, k := range e.varyKeys {
		if varyValue(h, k) != e.varyVals[i] {
			return false
		}
	}
	return true
}

// varyValue is a request's value of a nominated field, its lines joined
// and the spaces around commas dropped (RFC 9111 4.1 allows normalising).
func varyValue(h http.Header, k string) string {
	vs := h[k]
	switch len(vs) {
	case 0:
		return "\x00" // absent differs from empty
	case 1:
		return normalizeList(vs[0])
	}
	return normalizeList(strings.Join(vs, ","))
}

func normalizeList(s string) string {
	if !strings.ContainsAny(s, ", \t") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return strings.Join(parts, ",")
}

// store is the entries of one cache, in least-recently-used order, bound
// by the sum of their sizes. Its methods may be called concurrently.
type store struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	n     int
	lru   list.List // of *entry, most recent at the front
	byKey map[string][]*entry
}

func newStore(max int64) *store { return &store{max: max, byKey: map[string][]*entry{}} }

// get returns the variant under key that a request with header h selects,
// marking it used; nil if none.
func (s *store) get(key, side string, h http.Header) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.byKey[key] {
		if e.matches(side, h) {
			s.lru.MoveToFront(e.elem)
			return e
		}
	}
	return nil
}

// put stores e, in place of the variant of its key with the same Vary
// values (or of old, when old is still stored), and evicts the least
// recently used entries beyond the bound.
func (s *store) put(e *entry, old *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old != nil && old.elem != nil {
		s.removeLocked(old)
	}
	for _, o := range s.byKey[e.key] {
		if sameVary(o, e) {
			s.removeLocked(o)
			break
		}
	}
	if vs := s.byKey[e.key]; len(vs) >= maxVariants {
		s.removeLocked(vs[0])
	}
	e.elem = s.lru.PushFront(e)
	s.byKey[e.key] = append(s.byKey[e.key], e)
	s.bytes += e.size
	s.n++
	for s.bytes > s.max {
		s.removeLocked(s.lru.Back().Value.(*entry))
	}
}

func sameVary(a, b *entry) bool {
	if a.side != b.side || len(a.varyKeys) != len(b.varyKeys) {
		return false
	}
	for i := range a.varyKeys {
		if a.varyKeys[i] != b.varyKeys[i] || a.varyVals[i] != b.varyVals[i] {
			return false
		}
	}
	return true
}

// remove drops every variant under key; it reports how many there were.
func (s *store) remove(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.byKey[key]
	for len(s.byKey[key]) > 0 {
		s.removeLocked(s.byKey[key][0])
	}
	return len(vs)
}

func (s *store) removeLocked(e *entry) {
	if e.elem == nil {
		return
	}
	s.lru.Remove(e.elem)
	e.elem = nil
	s.bytes -= e.size
	s.n--
	vs := s.byKey[e.key]
	for i, o := range vs {
		if o == e {
			vs = append(vs[:i:i], vs[i+1:]...)
			break
		}
	}
	if len(vs) == 0 {
		delete(s.byKey, e.key)
	} else {
		s.byKey[e.key] = vs
	}
}

// usage is the bytes and entries stored.
func (s *store) usage() (bytes int64, entries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, s.n
}
