package httpcache

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// tee is the ResponseWriter an upstream call writes to: it passes the
// response on to the client (none for a background revalidation) and
// keeps a copy of a storable one, or holds back a 304 to a revalidation
// and an error that a stale response answers instead.
type tee struct {
	c          *Cache
	client     http.ResponseWriter // nil: a background revalidation
	r          *http.Request       // the client's request
	key        string
	side       string
	stale      *entry // the stored response this call replaces, if any
	revalidate bool   // the call is conditional on stale's validators
	rcc        directives
	reqTime    time.Time

	h        http.Header // the response's fields, until they are passed on
	mode     teeMode
	status   int
	respTime time.Time
	stored   http.Header // the fields to store (nil: not storable)
	body     []byte
	length   int64 // the body's Content-Length; -1: unknown
}

var _ interface {
	http.ResponseWriter
	http.Flusher
} = (*tee)(nil)

type teeMode int

const (
	teeHead        teeMode = iota // before the status
	tePass                        // the response goes to the client
	teeNotModified                // a 304 to the revalidation
	teeStaleError                 // an error that stale answers
)

func (t *tee) Header() http.Header {
	if t.mode == tePass && t.client != nil {
		return t.client.Header() // trailers, after the head
	}
	return t.h
}

func (t *tee) WriteHeader(code int) {
	if code < 200 {
		clear(t.h) // informational responses are not passed on
		return
	}
	if t.mode != teeHead {
		return
	}
	t.status, t.respTime = code, t.c.now()
	switch {
	case t.revalidate && code == http.StatusNotModified:
		t.mode = teeNotModified
		return
	case (code == 500 || code == 502 || code == 503 || code == 504) && t.c.staleIfError(t.stale, t.rcc, t.respTime):
		t.mode = teeStaleError
		return
	}
	t.mode = tePass
	t.length = -1
	if t.c.storable(t.r, code, t.h) {
		t.length = contentLength(t.h)
		if t.length <= t.c.cfg.MaxObjectBytes {
			t.stored = t.h.Clone()
			if t.length > 0 {
				t.body = make([]byte, 0, t.length)
			}
		}
	}
	if t.client != nil {
		h := t.client.Header()
		for k, v := range t.h {
			h[k] = v
		}
		t.client.WriteHeader(code)
	}
}

func (t *tee) Write(p []byte) (int, error) {
	if t.mode == teeHead {
		t.WriteHeader(http.StatusOK)
	}
	if t.mode != tePass {
		return len(p), nil
	}
	if t.stored != nil {
		if int64(len(t.body)+len(p)) > t.c.cfg.MaxObjectBytes {
			t.stored, t.body = nil, nil // too large: streams through
		} else {
			t.body = append(t.body, p...)
		}
	}
	if t.client == nil {
		return len(p), nil
	}
	n, err := t.client.Write(p)
	if err != nil {
		t.stored, t.body = nil, nil // the copy stops short: nothing whole to store
	}
	return n, err
}

// Flush passes a flush on (ReverseProxy flushes streamed responses).
func (t *tee) Flush() {
	if t.mode == tePass && t.client != nil {
		http.NewResponseController(t.client).Flush()
	}
}

// Unwrap gives http.ResponseController the client's writer.
func (t *tee) Unwrap() http.ResponseWriter { return t.client }

// finish ends the upstream call: it stores the response when it is
// storable and came whole, refreshes stale on a 304, or answers with
// stale in place of an error.
func (t *tee) finish() Result {
	now := t.c.now()
	switch t.mode {
	case teeNotModified:
		e := t.c.refresh(t.stale, t.h, t.reqTime, t.respTime)
		if e.size <= t.c.cfg.MaxBytes {
			t.c.store.put(e, t.stale)
		}
		if t.client != nil {
			t.c.serveEntry(t.client, t.r, e, now)
		}
		return Revalidated
	case teeStaleError:
		if t.client != nil {
			t.c.serveEntry(t.client, t.r, t.stale, now)
		}
		return Stale
	case tePass:
		if t.stored == nil || t.length >= 0 && int64(len(t.body)) != t.length {
			return Uncacheable
		}
		e := t.c.newEntry(t.key, t.side, t.r, t.status, t.stored, t.body, t.reqTime, t.respTime)
		if e == nil {
			return Uncacheable
		}
		t.c.store.put(e, t.stale)
		return Miss
	}
	return Uncacheable
}

// contentLength is a response's Content-Length; -1 when it has none.
func contentLength(h http.Header) int64 {
	v := h.Get("Content-Length")
	if v == "" {
		return -1
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// storable reports whether a response to r may be stored (RFC 9111 3):
// a GET answered with a final status this cache understands, not
// no-store (unless must-understand and understood), no Vary: *, no
// Set-Cookie unless CacheSetCookie, no trailers, and explicit freshness
// or a status or directive that allows heuristic freshness.
func (c *Cache) storable(r *http.Request, status int, h http.Header) bool {
	if r.Method != http.MethodGet || !understood(status) {
		return false
	}
	cc := parseCacheControl(h["Cache-Control"])
	if cc.noStore && !cc.mustUnderstand {
		return false
	}
	if _, ok := h["Set-Cookie"]; ok && !c.cfg.CacheSetCookie {
		return false
	}
	if _, ok := h["Trailer"]; ok {
		return false
	}
	for _, v := range h["Vary"] {
		for f := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(f) == "*" {
				return false
			}
		}
	}
	_, expires := h["Expires"]
	return cc.maxAge >= 0 || expires || cc.public || cc.private || heuristic(status)
}

// understood: a final status of RFC 9110 other than 206 (ranges are not
// stored) and 304.
func understood(status int) bool {
	return status >= 200 && status != http.StatusPartialContent && status != http.StatusNotModified && http.StatusText(status) != ""
}

// heuristic: the status codes RFC 9110 15.1 makes heuristically cacheable.
func heuristic(status int) bool {
	switch status {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// newEntry builds the entry of a storable response to r, received between
// reqTime and respTime; nil when it would never be of use (no freshness,
// no validator, no stale-if-error) or does not fit.
func (c *Cache) newEntry(key, side string, r *http.Request, status int, h http.Header, body []byte, reqTime, respTime time.Time) *entry {
	for _, k := range c.drop {
		delete(h, k)
	}
	e := &entry{key: key, side: side, status: status, header: h, body: body}
	for _, v := range h["Vary"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				f = http.CanonicalHeaderKey(f)
				e.varyKeys = append(e.varyKeys, f)
				e.varyVals = append(e.varyVals, varyValue(r.Header, f))
			}
		}
	}
	if c.cfg.CacheAuthorized { // the credentials select the response too
		for _, f := range c.creds {
			e.varyKeys = append(e.varyKeys, f)
			e.varyVals = append(e.varyVals, varyValue(r.Header, f))
		}
	}
	c.times(e, reqTime, respTime)
	validator := e.etag() != "" || e.lastModified() != ""
	if !validator && (e.noCache || e.freshness <= 0 && e.staleIfError <= 0) {
		return nil // never usable: no-cache, or stale from the start, and nothing to revalidate with
	}
	if e.size = sizeOf(e); e.size > c.cfg.MaxBytes {
		return nil
	}
	return e
}

// sizeOf is what e counts against the cache's bound.
func sizeOf(e *entry) int64 {
	n := entryOverhead + int64(len(e.key)+len(e.body))
	for k, vs := range e.header {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	for i := range e.varyVals {
		n += int64(len(e.varyKeys[i]) + len(e.varyVals[i]))
	}
	return n
}

// times sets e's age and freshness inputs from its header (RFC 9111
// 4.2.1, 4.2.3), and its directives.
func (c *Cache) times(e *entry, reqTime, respTime time.Time) {
	h := e.header
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		date = respTime
		h.Set("Date", respTime.UTC().Format(http.TimeFormat))
	}
	var ageValue time.Duration
	if v := h.Get("Age"); v != "" {
		ageValue = parseDelta(v)
	}
	delete(h, "Age") // sent as the current age
	apparent := max(0, respTime.Sub(date))
	corrected := ageValue + max(0, respTime.Sub(reqTime))
	e.responseTime = respTime
	e.correctedInitialAge = max(apparent, corrected)

	cc := parseCacheControl(h["Cache-Control"])
	switch {
	case cc.maxAge >= 0:
		e.freshness = cc.maxAge
	case len(h["Expires"]) > 0:
		if exp, err := http.ParseTime(h.Get("Expires")); err == nil {
			e.freshness = max(0, exp.Sub(date)) // an invalid date: already expired
		}
	case heuristic(e.status) || cc.public || cc.private:
		e.freshness = c.cfg.DefaultTTL
	}
	e.mustRevalidate = cc.mustRevalidate
	e.noCache = cc.noCache
	e.staleIfError, e.staleWhileRev = c.cfg.StaleIfError, c.cfg.StaleWhileRevalidate
	if cc.staleIfError >= 0 {
		e.staleIfError = cc.staleIfError
	}
	if cc.staleWhileRevalidate >= 0 {
		e.staleWhileRev = cc.staleWhileRevalidate
	}
}

// refresh is stale updated by a 304's fields h (RFC 9111 3.2, 4.3.4):
// they replace the stored ones, framing fields excepted, and the age and
// freshness start again from the 304.
func (c *Cache) refresh(stale *entry, h http.Header, reqTime, respTime time.Time) *entry {
	nh := stale.header.Clone()
	for k, v := range h {
		switch k {
		case "Content-Length", "Content-Range", "Transfer-Encoding", "Trailer", "Content-Encoding":
			continue
		}
		nh[k] = v
	}
	if _, ok := h["Date"]; !ok {
		delete(nh, "Date") // the stored Date is not the 304's
	}
	for _, k := range c.drop {
		delete(nh, k)
	}
	e := &entry{key: stale.key, side: stale.side, varyKeys: stale.varyKeys, varyVals: stale.varyVals, status: stale.status,
		header: nh, body: stale.body}
	c.times(e, reqTime, respTime)
	e.size = sizeOf(e)
	return e
}
