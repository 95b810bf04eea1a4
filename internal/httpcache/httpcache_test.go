package httpcache

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a test clock moved by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// origin is an Upstream that answers with respond and counts its calls.
type origin struct {
	calls   atomic.Int32
	mu      sync.Mutex
	last    http.Header // the last request's fields
	respond func(w http.ResponseWriter, r *http.Request)
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request, _ bool) {
	o.calls.Add(1)
	o.mu.Lock()
	o.last = r.Header.Clone()
	o.mu.Unlock()
	o.respond(w, r)
}

func (o *origin) lastHeader(k string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last.Get(k)
}

func testCache(ck *clock, mod func(*Config)) *Cache {
	cfg := Config{MaxBytes: 1 << 20, MaxObjectBytes: 64 << 10, CoalesceTimeout: 5 * time.Second, CredentialHeaders: []string{"Cookie"}}
	if mod != nil {
		mod(&cfg)
	}
	return New(cfg, ck.now)
}

func get(c *Cache, o *origin, path string, hdr ...string) (*httptest.ResponseRecorder, Result) {
	return do(c, o, http.MethodGet, path, hdr...)
}

func do(c *Cache, o *origin, method, path string, hdr ...string) (*httptest.ResponseRecorder, Result) {
	r := httptest.NewRequest(method, "http://api.example"+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	res := c.Serve(w, r, "", o.serve)
	return w, res
}

// fixed answers body with the given fields, Date from ck.
func fixed(ck *clock, body string, hdr ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", ck.now().Format(http.TimeFormat))
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(body))
	}
}

func expect(t *testing.T, got Result, want Result, w *httptest.ResponseRecorder, body string) {
	t.Helper()
	if got != want {
		t.Errorf("result %v, want %v", got, want)
	}
	if w != nil && w.Body.String() != body {
		t.Errorf("body %q, want %q", w.Body.String(), body)
	}
}

func TestFreshness(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	o := &origin{respond: fixed(ck, "a", "Cache-Control", "max-age=10")}
	w, res := get(c, o, "/x")
	expect(t, res, Miss, w, "a")
	ck.add(4 * time.Second)
	w, res = get(c, o, "/x")
	expect(t, res, Hit, w, "a")
	if got := w.Header().Get("Age"); got != "4" {
		t.Errorf("Age %q, want 4", got)
	}
	w, res = do(c, o, http.MethodHead, "/x")
	expect(t, res, Hit, w, "")
	ck.add(7 * time.Second)
	_, res = get(c, o, "/x")
	expect(t, res, Miss, nil, "")
	if n := o.calls.Load(); n != 2 {
		t.Errorf("upstream calls %d, want 2", n)
	}
}

func TestAge(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	// The origin's Date is 3s old and an upstream cache held it 5s:
	// corrected_initial_age is max(3, 5 + the response delay of 2s) = 7.
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		date := ck.now().Add(-3 * time.Second)
		ck.add(2 * time.Second)
		w.Header().Set("Date", date.Format(http.TimeFormat))
		w.Header().Set("Age", "5")
		w.Header().Set("Cache-Control", "max-age=10")
		w.Write([]byte("a"))
	}}
	get(c, o, "/x")
	ck.add(2 * time.Second)
	w, res := get(c, o, "/x")
	expect(t, res, Hit, w, "a")
	if got := w.Header().Get("Age"); got != "9" {
		t.Errorf("Age %q, want 9", got)
	}
	ck.add(time.Second)
	if _, res = get(c, o, "/x"); res != Miss {
		t.Errorf("at age 10: %v, want miss", res)
	}
}

func TestExpiresAndHeuristic(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, func(cfg *Config) { cfg.DefaultTTL = time.Minute })
	o := &origin{respond: fixed(ck, "e", "Expires", ck.now().Add(30*time.Second).Format(http.TimeFormat))}
	get(c, o, "/e")
	ck.add(29 * time.Second)
	if _, res := get(c, o, "/e"); res != Hit {
		t.Errorf("before Expires: %v, want hit", res)
	}
	o.respond = fixed(ck, "h")
	get(c, o, "/h")
	ck.add(59 * time.Second)
	if _, res := get(c, o, "/h"); res != Hit {
		t.Errorf("within default_ttl: %v, want hit", res)
	}
	o.respond = fixed(ck, "bad", "Expires", "0")
	get(c, o, "/bad")
	if _, res := get(c, o, "/bad"); res == Hit {
		t.Errorf("invalid Expires: a hit, want it stale")
	}
}

func TestNotStored(t *testing.T) {
	t.Parallel()
	ck := newClock()
	cases := []struct {
		name string
		resp []string
		req  []string
	}{
		{"no-store", []string{"Cache-Control", "max-age=60, no-store"}, nil},
		{"request no-store", []string{"Cache-Control", "max-age=60"}, []string{"Cache-Control", "no-store"}},
		{"authorization", []string{"Cache-Control", "max-age=60"}, []string{"Authorization", "Bearer x"}},
		{"cookie", []string{"Cache-Control", "max-age=60"}, []string{"Cookie", "s=1"}},
		{"set-cookie", []string{"Cache-Control", "max-age=60", "Set-Cookie", "s=1"}, nil},
		{"vary star", []string{"Cache-Control", "max-age=60", "Vary", "*"}, nil},
		{"no freshness no validator", nil, nil},
		{"range", []string{"Cache-Control", "max-age=60"}, []string{"Range", "bytes=0-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := testCache(ck, nil)
			o := &origin{respond: fixed(ck, "z", tc.resp...)}
			get(c, o, "/z", tc.req...)
			w, res := get(c, o, "/z", tc.req...)
			expect(t, res, Uncacheable, w, "z")
			if n := o.calls.Load(); n != 2 {
				t.Errorf("upstream calls %d, want 2", n)
			}
		})
	}
}

func TestCacheAuthorizedKeysByCredentials(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, func(cfg *Config) { cfg.CacheAuthorized = true })
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte(r.Header.Get("Authorization")))
	}}
	get(c, o, "/a", "Authorization", "A")
	get(c, o, "/a", "Authorization", "B")
	w, res := get(c, o, "/a", "Authorization", "A")
	expect(t, res, Hit, w, "A")
	w, res = get(c, o, "/a", "Authorization", "B")
	expect(t, res, Hit, w, "B")
	if _, res = get(c, o, "/a"); res != Miss {
		t.Errorf("without credentials: %v, want miss", res)
	}
}

func TestVary(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language, accept")
		w.Write([]byte(r.Header.Get("Accept-Language")))
	}}
	get(c, o, "/v", "Accept-Language", "en")
	get(c, o, "/v", "Accept-Language", "fr")
	w, res := get(c, o, "/v", "Accept-Language", "en")
	expect(t, res, Hit, w, "en")
	w, res = get(c, o, "/v", "Accept-Language", "fr")
	expect(t, res, Hit, w, "fr")
	if _, res = get(c, o, "/v", "Accept-Language", "fr", "Accept", "text/plain"); res != Miss {
		t.Errorf("another Accept: %v, want miss", res)
	}
	if _, res = get(c, o, "/v"); res != Miss {
		t.Errorf("no Accept-Language: %v, want miss", res)
	}
	if s := c.Stats(); s.Entries != 4 {
		t.Errorf("entries %d, want 4", s.Entries)
	}
}

func TestRevalidation(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	o := &origin{}
	o.respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", ck.now().Format(http.TimeFormat))
		w.Header().Set("Cache-Control", "max-age=5")
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.Header().Set("X-Fresh", "yes")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte("body"))
	}
	get(c, o, "/r")
	ck.add(6 * time.Second)
	w, res := get(c, o, "/r")
	expect(t, res, Revalidated, w, "body")
	if got := o.lastHeader("If-None-Match"); got != `"v1"` {
		t.Errorf("If-None-Match sent %q, want \"v1\"", got)
	}
	if w.Code != 200 || w.Header().Get("X-Fresh") != "yes" {
		t.Errorf("got %d with X-Fresh %q, want 200 with the 304's fields", w.Code, w.Header().Get("X-Fresh"))
	}
	w, res = get(c, o, "/r")
	expect(t, res, Hit, w, "body")
	// The client's own validator: a 304 from the fresh entry.
	w, res = get(c, o, "/r", "If-None-Match", `W/"v1"`)
	if res != Hit || w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("conditional: %v %d %q, want hit 304 without a body", res, w.Code, w.Body.String())
	}
	w, _ = get(c, o, "/r", "If-None-Match", `"v2"`)
	if w.Code != 200 {
		t.Errorf("another tag: %d, want 200", w.Code)
	}
	if n := o.calls.Load(); n != 2 {
		t.Errorf("upstream calls %d, want 2", n)
	}
}

func TestNoCacheAndMustRevalidate(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	lm := ck.now().Add(-time.Hour).Format(http.TimeFormat)
	o := &origin{}
	o.respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Last-Modified", lm)
		if r.Header.Get("If-Modified-Since") == lm {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte("nc"))
	}
	get(c, o, "/nc")
	w, res := get(c, o, "/nc")
	expect(t, res, Revalidated, w, "nc")
	// A fresh entry, but the request says no-cache.
	o.respond = fixed(ck, "f", "Cache-Control", "max-age=60", "ETag", `"f"`)
	get(c, o, "/f")
	if _, res = get(c, o, "/f", "Cache-Control", "no-cache"); res != Miss {
		t.Errorf("request no-cache: %v, want miss (a 200 to the revalidation)", res)
	}
	if _, res = get(c, o, "/f", "Pragma", "no-cache"); res != Miss {
		t.Errorf("Pragma no-cache: %v, want miss", res)
	}
}

func TestRequestDirectives(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	o := &origin{respond: fixed(ck, "d", "Cache-Control", "max-age=10")}
	get(c, o, "/d")
	ck.add(5 * time.Second)
	if _, res := get(c, o, "/d", "Cache-Control", "max-age=3"); res != Miss {
		t.Errorf("max-age=3 at age 5: %v, want miss", res)
	}
	ck.add(5 * time.Second)
	if _, res := get(c, o, "/d", "Cache-Control", "min-fresh=6"); res != Miss {
		t.Errorf("min-fresh=6 with 5s left: %v, want miss", res)
	}
	ck.add(12 * time.Second) // stale by 2s
	if _, res := get(c, o, "/d", "Cache-Control", "max-stale=5"); res != Stale {
		t.Errorf("max-stale=5, stale by 2s: %v, want stale", res)
	}
	if _, res := get(c, o, "/d", "Cache-Control", "max-stale=1"); res != Miss {
		t.Errorf("max-stale=1, stale by 2s: %v, want miss", res)
	}
	w, res := get(c, o, "/none", "Cache-Control", "only-if-cached")
	if res != Miss || w.Code != http.StatusGatewayTimeout {
		t.Errorf("only-if-cached: %v %d, want miss 504", res, w.Code)
	}
}

func TestStaleIfError(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	o := &origin{respond: fixed(ck, "ok", "Cache-Control", "max-age=1, stale-if-error=60")}
	get(c, o, "/s")
	ck.add(30 * time.Second)
	o.respond = func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("down"))
	}
	w, res := get(c, o, "/s")
	expect(t, res, Stale, w, "ok")
	ck.add(40 * time.Second) // beyond the window
	w, res = get(c, o, "/s")
	expect(t, res, Uncacheable, w, "down")
	if w.Code != http.StatusBadGateway {
		t.Errorf("past stale-if-error: %d, want 502", w.Code)
	}
	// must-revalidate forbids it; a route default applies without the directive.
	c = testCache(ck, func(cfg *Config) { cfg.StaleIfError = time.Minute })
	o.respond = fixed(ck, "ok", "Cache-Control", "max-age=1, must-revalidate")
	get(c, o, "/m")
	o.respond = fixed(ck, "ok", "Cache-Control", "max-age=1")
	get(c, o, "/d")
	ck.add(10 * time.Second)
	o.respond = func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }
	if _, res = get(c, o, "/m"); res == Stale {
		t.Errorf("must-revalidate: served stale")
	}
	if _, res = get(c, o, "/d"); res != Stale {
		t.Errorf("route stale_if_error: %v, want stale", res)
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	release := make(chan struct{})
	o := &origin{respond: fixed(ck, "v1", "Cache-Control", "max-age=1, stale-while-revalidate=30")}
	get(c, o, "/w")
	ck.add(5 * time.Second)
	o.respond = func(w http.ResponseWriter, r *http.Request) {
		<-release
		fixed(ck, "v2", "Cache-Control", "max-age=60")(w, r)
	}
	for range 3 {
		w, res := get(c, o, "/w")
		expect(t, res, Stale, w, "v1")
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, res := get(c, o, "/w")
		if res == Hit && w.Body.String() == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background revalidation never stored v2 (last %v %q)", res, w.Body.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := o.calls.Load(); n != 2 {
		t.Errorf("upstream calls %d, want 2 (one background revalidation)", n)
	}
}

func TestCoalescing(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	gate := make(chan struct{})
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		<-gate
		fixed(ck, "one", "Cache-Control", "max-age=60")(w, r)
	}}
	const n = 8
	var wg sync.WaitGroup
	results := make(chan Result, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, res := get(c, o, "/c")
			if w.Body.String() != "one" {
				t.Errorf("body %q", w.Body.String())
			}
			results <- res
		}()
	}
	for c.waiting("http://api.example/c") == false {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the rest join (a late one is a hit)
	close(gate)
	wg.Wait()
	close(results)
	var miss int
	for r := range results {
		switch r {
		case Miss:
			miss++
		case Coalesced, Hit:
		default:
			t.Errorf("result %v", r)
		}
	}
	if miss != 1 || o.calls.Load() != 1 {
		t.Errorf("%d misses, %d upstream calls; want 1 and 1", miss, o.calls.Load())
	}
}

func TestCoalescedUncacheable(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	gate := make(chan struct{})
	o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
		<-gate
		fixed(ck, "x", "Cache-Control", "no-store")(w, r)
	}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); get(c, o, "/u") }()
	}
	for !c.waiting("http://api.example/u") {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(gate)
	wg.Wait()
	if n := o.calls.Load(); n != 4 {
		t.Errorf("upstream calls %d, want 4 (each waiter went itself)", n)
	}
}

func TestEvictionAndObjectBound(t *testing.T) {
	t.Parallel()
	ck := newClock()
	body := strings.Repeat("b", 1000)
	c := testCache(ck, func(cfg *Config) { cfg.MaxBytes = 3 * (1000 + 600); cfg.MaxObjectBytes = 1500 })
	o := &origin{respond: fixed(ck, body, "Cache-Control", "max-age=60")}
	for _, p := range []string{"/1", "/2", "/3"} {
		get(c, o, p)
	}
	get(c, o, "/1") // used: /2 is now the oldest
	get(c, o, "/4")
	if s := c.Stats(); s.Entries != 3 || s.Bytes > 3*1600 {
		t.Errorf("entries %d bytes %d, want 3 within %d", s.Entries, s.Bytes, 3*1600)
	}
	if _, res := get(c, o, "/2"); res != Miss {
		t.Errorf("/2: %v, want miss (evicted)", res)
	}
	if _, res := get(c, o, "/4"); res != Hit {
		t.Errorf("/4: %v, want hit", res)
	}
	big := strings.Repeat("B", 2000)
	o.respond = fixed(ck, big, "Cache-Control", "max-age=60")
	w, res := get(c, o, "/big")
	expect(t, res, Uncacheable, w, big)
	// Without Content-Length, cut off while it streams.
	o.respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		for range 4 {
			w.Write([]byte(big[:500]))
		}
	}
	w, res = get(c, o, "/chunked")
	expect(t, res, Uncacheable, w, big)
}

func TestInvalidation(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	o := &origin{respond: fixed(ck, "i", "Cache-Control", "max-age=60")}
	get(c, o, "/i")
	get(c, o, "/other")
	o.respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Location", "/other")
		w.WriteHeader(http.StatusNoContent)
	}
	do(c, o, http.MethodPost, "/i")
	o.respond = fixed(ck, "i", "Cache-Control", "max-age=60")
	if _, res := get(c, o, "/i"); res != Miss {
		t.Errorf("after POST: %v, want miss", res)
	}
	if _, res := get(c, o, "/other"); res != Miss {
		t.Errorf("Content-Location after POST: %v, want miss", res)
	}
	o.respond = func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }
	do(c, o, http.MethodDelete, "/i")
	if _, res := get(c, o, "/i"); res != Hit {
		t.Errorf("after a failed DELETE: %v, want hit", res)
	}
}

// TestSides: a response fetched for one side of a split is never served
// to the other; an unsafe request drops the URI on both.
func TestSides(t *testing.T) {
	t.Parallel()
	ck := newClock()
	c := testCache(ck, nil)
	o := &origin{}
	serve := func(method, side string) Result {
		o.respond = fixed(ck, side, "Cache-Control", "max-age=60")
		r := httptest.NewRequest(method, "http://api.example/s", nil)
		w := httptest.NewRecorder()
		res := c.Serve(w, r, side, o.serve)
		if method == http.MethodGet && w.Body.String() != side {
			t.Errorf("side %s got %q", side, w.Body.String())
		}
		return res
	}
	for _, want := range []struct {
		method, side string
		res          Result
	}{
		{"GET", "prod", Miss}, {"GET", "exp", Miss}, {"GET", "prod", Hit}, {"GET", "exp", Hit},
		{"PUT", "prod", Uncacheable}, {"GET", "exp", Miss}, {"GET", "prod", Miss},
	} {
		if got := serve(want.method, want.side); got != want.res {
			t.Errorf("%s for %s: %v, want %v", want.method, want.side, got, want.res)
		}
	}
}
