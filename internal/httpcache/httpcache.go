// Package httpcache is a private HTTP response cache (RFC 9111, with RFC
// 5861's stale-if-error and stale-while-revalidate) in front of one
// route's upstream: in memory, bound in bytes with least-recently-used
// eviction, one bound per stored response.
//
// Cache.Serve answers a request from the cache or through an Upstream (the
// route's proxy), whose response it passes on to the client as it arrives
// while keeping a copy of a storable one (never more than
// Config.MaxObjectBytes: a larger body streams through and is not kept).
// Concurrent misses for one URI make one upstream call: the others wait
// (Config.CoalesceTimeout at most) and are then served what it stored, or
// go upstream themselves when it stored nothing they can use. A stale
// response with a validator is revalidated with If-None-Match and
// If-Modified-Since; a 304 refreshes it. Unsafe methods that succeed
// invalidate the URI (RFC 9111 4.4).
//
// As a private cache it uses max-age and ignores s-maxage and
// proxy-revalidate, and stores private responses. Requests with
// credentials (Authorization, Config.CredentialHeaders) go past it unless
// Config.CacheAuthorized, and then their credentials select the stored
// response as a Vary field would, so that no caller is served another's.
package httpcache

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is a cache's policy. MaxBytes and MaxObjectBytes must be positive.
type Config struct {
	MaxBytes       int64 // the bound of all stored responses (bodies, headers and bookkeeping)
	MaxObjectBytes int64 // the bound of one stored response's body
	// DefaultTTL is the heuristic freshness lifetime (RFC 9111 4.2.2) of a
	// response without explicit expiration whose status is heuristically
	// cacheable (RFC 9110 15.1) or that is marked public or private; 0:
	// none, such a response is stored only to be revalidated.
	DefaultTTL time.Duration
	// StaleIfError and StaleWhileRevalidate apply to responses that do
	// not carry the directive themselves; 0: only the response's.
	StaleIfError, StaleWhileRevalidate time.Duration
	// CoalesceTimeout is how long a request waits for the upstream call of
	// another for the same URI before making its own.
	CoalesceTimeout time.Duration
	// CacheAuthorized stores and serves responses to requests with
	// credentials, keyed by the credentials.
	CacheAuthorized bool
	// CacheSetCookie stores responses with Set-Cookie (served to every
	// caller of the URI with the same credentials).
	CacheSetCookie bool
	// CredentialHeaders are request fields that carry credentials besides
	// Authorization (Cookie, X-Api-Key).
	CredentialHeaders []string
	// DropHeaders are response fields never stored (per-exchange fields
	// the proxy adds).
	DropHeaders []string
}

// Result is what became of a request.
type Result int

const (
	// Uncacheable: the request went past the cache (a method other than
	// GET or HEAD, credentials, Range, an upgrade, no-store), or its
	// response could not be stored.
	Uncacheable Result = iota
	Hit                // served fresh from the cache
	Miss               // fetched upstream and stored
	Stale              // served stale: stale-if-error, stale-while-revalidate, max-stale
	Revalidated        // a stored response revalidated with a 304
	Coalesced          // served what another request's upstream call stored
	nResults
)

// Results are the Result names, by value: the result label of metrics.
var Results = [nResults]string{"uncacheable", "hit", "miss", "stale", "revalidated", "coalesced"}

func (r Result) String() string { return Results[r] }

// Upstream sends r upstream and writes the response to w, as
// httputil.ReverseProxy does. background is set for a revalidation no
// client waits for (r's context is then not the client's). It may panic
// with http.ErrAbortHandler when the upstream response is cut.
type Upstream func(w http.ResponseWriter, r *http.Request, background bool)

// Cache is a response cache. Its methods may be called concurrently.
type Cache struct {
	cfg     Config
	now     func() time.Time
	store   *store
	creds   []string // canonical credential fields, Authorization first
	drop    []string
	mu      sync.Mutex
	flights map[string]chan struct{}
	counts  [nResults]atomic.Uint64
}

// New returns an empty cache; now is its clock (nil: time.Now).
func New(cfg Config, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	c := &Cache{cfg: cfg, now: now, store: newStore(cfg.MaxBytes), flights: map[string]chan struct{}{}, creds: []string{"Authorization"}}
	for _, h := range cfg.CredentialHeaders {
		if h = http.CanonicalHeaderKey(h); h != "Authorization" {
			c.creds = append(c.creds, h)
		}
	}
	for _, h := range cfg.DropHeaders {
		c.drop = append(c.drop, http.CanonicalHeaderKey(h))
	}
	return c
}

// Stats are a cache's counters.
type Stats struct {
	Lookups [nResults]uint64 // by Result
	Bytes   int64
	Entries int
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	var s Stats
	for i := range s.Lookups {
		s.Lookups[i] = c.counts[i].Load()
	}
	s.Bytes, s.Entries = c.store.usage()
	return s
}

func (c *Cache) count(r Result) Result {
	c.counts[r].Add(1)
	return r
}

// Serve answers r from the cache or through next, and reports how. side
// names where next sends r (the cluster of a split): responses fetched
// for one side are never served to another. A
// method other than GET and HEAD goes to next; when it succeeds (a status
// under 400) and is unsafe, the URI's responses, and those of its
// Location and Content-Location on the same host, are dropped (RFC 9111
// 4.4).
func (c *Cache) Serve(w http.ResponseWriter, r *http.Request, side string, next Upstream) Result {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if safeMethod(r.Method) {
			next(w, r, false)
			return c.count(Uncacheable)
		}
		sw := &statusOf{ResponseWriter: w}
		next(sw, r, false)
		if sw.status > 0 && sw.status < 400 {
			c.invalidate(r, sw.ResponseWriter.Header())
		}
		return c.count(Uncacheable)
	}
	rcc := requestDirectives(r.Header)
	if c.bypass(r) || rcc.noStore {
		next(w, r, false)
		return c.count(Uncacheable)
	}
	key := cacheKey(r)
	waited := false
	for {
		now := c.now()
		e := c.store.get(key, side, r.Header)
		if e != nil {
			age := e.age(now)
			if ok, stale := usable(e, rcc, age); ok {
				c.serveEntry(w, r, e, now)
				switch {
				case stale:
					return c.count(Stale)
				case waited:
					return c.count(Coalesced)
				}
				return c.count(Hit)
			}
			if c.whileRevalidate(e, rcc, age) {
				c.serveEntry(w, r, e, now)
				if e.revalidating.CompareAndSwap(false, true) {
					c.background(e, r, next)
				}
				return c.count(Stale)
			}
		}
		if rcc.onlyIfCached {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusGatewayTimeout)
			w.Write([]byte("attache: only-if-cached: not in the cache\n"))
			return c.count(Miss)
		}
		if e == nil && (conditional(r.Header) || r.Method == http.MethodHead) {
			// The client's validators go upstream as they came; its 304
			// is passed on, a full response stored. A HEAD stores
			// nothing. Neither waits for, nor is waited for by, others.
			return c.fetch(w, r, key, side, nil, rcc, next)
		}
		if waited {
			return c.fetch(w, r, key, side, e, rcc, next)
		}
		flight := side + "\x00" + key
		c.mu.Lock()
		done, busy := c.flights[flight]
		if !busy {
			done = make(chan struct{})
			c.flights[flight] = done
		}
		c.mu.Unlock()
		if !busy {
			defer func() {
				c.mu.Lock()
				delete(c.flights, flight)
				c.mu.Unlock()
				close(done)
			}()
			return c.fetch(w, r, key, side, e, rcc, next)
		}
		waited = true
		t := time.NewTimer(c.cfg.CoalesceTimeout)
		select {
		case <-done:
		case <-t.C:
		case <-r.Context().Done():
			// Gone, or only half-closed (net/http ends an HTTP/1.x
			// request's context at the end of its stream): next decides.
		}
		t.Stop()
	}
}

// usable reports whether e may answer a request with directives rcc
// without going upstream (RFC 9111 4.2, 5.2.1), and whether it is then
// served stale (max-stale).
func usable(e *entry, rcc directives, age time.Duration) (ok, stale bool) {
	if rcc.noCache || e.noCache || rcc.maxAge >= 0 && age > rcc.maxAge {
		return false, false
	}
	left := e.freshness - age
	if left > 0 {
		return rcc.minFresh < 0 || left >= rcc.minFresh, false
	}
	if e.mustRevalidate {
		return false, false
	}
	return rcc.maxStaleAny || rcc.maxStale >= 0 && -left <= rcc.maxStale, true
}

// whileRevalidate reports whether stale e may be served while it is
// revalidated in the background (RFC 5861 3).
func (c *Cache) whileRevalidate(e *entry, rcc directives, age time.Duration) bool {
	if rcc.noCache || e.noCache || e.mustRevalidate || e.staleWhileRev <= 0 || rcc.maxAge >= 0 && age > rcc.maxAge {
		return false
	}
	return age-e.freshness <= e.staleWhileRev
}

// staleIfError reports whether stale e may answer in place of an error
// (RFC 5861 4): the response's window or the request's.
func (c *Cache) staleIfError(e *entry, rcc directives, now time.Time) bool {
	if e == nil || e.noCache || e.mustRevalidate {
		return false
	}
	window := max(e.staleIfError, rcc.staleIfError)
	return window > 0 && e.age(now)-e.freshness <= window
}

// bypass reports whether r goes past the cache: credentials (unless
// CacheAuthorized), a body, a range, an upgrade.
func (c *Cache) bypass(r *http.Request) bool {
	if !c.cfg.CacheAuthorized {
		for _, h := range c.creds {
			if _, ok := r.Header[h]; ok {
				return true
			}
		}
	}
	_, rng := r.Header["Range"]
	_, upg := r.Header["Upgrade"]
	return rng || upg || r.ContentLength > 0 || len(r.TransferEncoding) > 0
}

// cacheKey is the primary key of r (RFC 9111 2): the URI, GET and HEAD
// alike. The scheme is the client's.
func cacheKey(r *http.Request) string {
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	return uriKey(scheme, r.Host, r.URL.EscapedPath(), r.URL.RawQuery)
}

func uriKey(scheme, host, path, query string) string {
	var b strings.Builder
	b.Grow(len(scheme) + len(host) + len(path) + len(query) + 1)
	b.WriteString(scheme)
	b.WriteString(strings.ToLower(host))
	b.WriteString(path)
	if query != "" {
		b.WriteByte('?')
		b.WriteString(query)
	}
	return b.String()
}

func safeMethod(m string) bool {
	return m == http.MethodOptions || m == http.MethodTrace
}

// conditional reports whether a request carries validators of its own.
func conditional(h http.Header) bool {
	_, inm := h["If-None-Match"]
	_, ims := h["If-Modified-Since"]
	return inm || ims
}

// invalidate drops the responses of an unsafe request's URI, and of the
// Location and Content-Location of its response when they are on the same
// host.
func (c *Cache) invalidate(r *http.Request, resp http.Header) {
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	c.store.remove(cacheKey(r))
	for _, f := range []string{"Location", "Content-Location"} {
		v := resp.Get(f)
		if v == "" {
			continue
		}
		u, err := r.URL.Parse(v)
		if err != nil || u.Host != "" && !strings.EqualFold(u.Host, r.Host) {
			continue
		}
		c.store.remove(uriKey(scheme, r.Host, u.EscapedPath(), u.RawQuery))
	}
}

// statusOf records the status of a response.
type statusOf struct {
	http.ResponseWriter
	status int
}

func (w *statusOf) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusOf) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusOf) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusOf) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// background revalidates e for r, outside r's lifetime (RFC 5861 3).
func (c *Cache) background(e *entry, r *http.Request, next Upstream) {
	out := r.Clone(context.WithoutCancel(r.Context()))
	out.Body, out.ContentLength = http.NoBody, 0
	setValidators(out.Header, e)
	rcc := requestDirectives(out.Header)
	go func() {
		defer e.revalidating.Store(false)
		defer func() {
			if v := recover(); v != nil && v != http.ErrAbortHandler {
				panic(v)
			}
		}()
		t := &tee{c: c, r: out, key: cacheKey(out), side: e.side, stale: e, revalidate: true, rcc: rcc, h: http.Header{}, reqTime: c.now()}
		next(t, out, true)
		t.finish()
	}()
}

// setValidators makes h a conditional request for e, in place of the
// client's own conditions.
func setValidators(h http.Header, e *entry) {
	for _, k := range []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"} {
		delete(h, k)
	}
	if v := e.etag(); v != "" {
		h.Set("If-None-Match", v)
	}
	if v := e.lastModified(); v != "" {
		h.Set("If-Modified-Since", v)
	}
}

// fetch sends r upstream (a revalidation of stale when it has a
// validator), passes the response on and stores it when it may.
func (c *Cache) fetch(w http.ResponseWriter, r *http.Request, key, side string, stale *entry, rcc directives, next Upstream) Result {
	out := r
	t := &tee{c: c, client: w, r: r, key: key, side: side, stale: stale, rcc: rcc, h: http.Header{}}
	if stale != nil && (stale.etag() != "" || stale.lastModified() != "") {
		out = r.Clone(r.Context())
		setValidators(out.Header, stale)
		t.revalidate = true
	}
	t.reqTime = c.now()
	next(t, out, false)
	return c.count(t.finish())
}

// serveEntry writes e to w as the answer to r: a 304 when r's own
// conditions hold for it (RFC 9110 13.2.2), with the Age it has at now.
func (c *Cache) serveEntry(w http.ResponseWriter, r *http.Request, e *entry, now time.Time) {
	h := w.Header()
	for k, v := range e.header {
		h[k] = append([]string(nil), v...)
	}
	h.Set("Age", strconv.FormatInt(int64(e.age(now)/time.Second), 10))
	if e.status == http.StatusOK && notModified(r.Header, e) {
		for _, k := range []string{"Content-Length", "Content-Type", "Content-Encoding", "Content-Language", "Content-Range", "Transfer-Encoding"} {
			delete(h, k)
		}
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if e.status != http.StatusNoContent && e.status >= 200 {
		h.Set("Content-Length", strconv.Itoa(len(e.body)))
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		w.Write(e.body)
	}
}

// notModified evaluates a request's If-None-Match, or without it its
// If-Modified-Since, against e (RFC 9110 13.1.2, 13.1.3; weak comparison).
func notModified(h http.Header, e *entry) bool {
	if inm := h.Values("If-None-Match"); len(inm) > 0 {
		tag := e.etag()
		if tag == "" {
			return false
		}
		for _, line := range inm {
			for t := range strings.SplitSeq(line, ",") {
				t = strings.TrimSpace(t)
				if t == "*" || weakEqual(t, tag) {
					return true
				}
			}
		}
		return false
	}
	ims := h.Get("If-Modified-Since")
	lm := e.lastModified()
	if ims == "" || lm == "" {
		return false
	}
	it, err1 := http.ParseTime(ims)
	lt, err2 := http.ParseTime(lm)
	return err1 == nil && err2 == nil && !lt.After(it)
}

func weakEqual(a, b string) bool {
	return strings.TrimPrefix(a, "W/") == strings.TrimPrefix(b, "W/")
}

// waiting reports whether an upstream call for key is under way (tests).
func (c *Cache) waiting(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.flights["\x00"+key]
	return ok
}
