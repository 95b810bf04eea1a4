package httpproxy

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/httpcache"
)

// countingBackend is a real HTTP server that counts the requests it gets,
// by path, and answers with handle.
type countingBackend struct {
	addr   string
	srv    *http.Server
	mu     sync.Mutex
	counts map[string]int
	last   map[string]http.Header
	handle atomic.Pointer[http.HandlerFunc]
}

func newCountingBackend(t *testing.T, h http.HandlerFunc) *countingBackend {
	t.Helper()
	b := &countingBackend{counts: map[string]int{}, last: map[string]http.Header{}}
	b.handle.Store(&h)
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.counts[r.URL.Path]++
		b.last[r.URL.Path] = r.Header.Clone()
		b.mu.Unlock()
		(*b.handle.Load())(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	b.addr = ln.Addr().String()
	return b
}

func (b *countingBackend) count(path string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.counts[path]
}

func (b *countingBackend) header(path, k string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last[path].Get(k)
}

func (b *countingBackend) set(h http.HandlerFunc) { b.handle.Store(&h) }

// cacheProxy is a listener on path with one cached route to b.
func cacheProxy(t *testing.T, path wirePath, b *countingBackend, rc RouteCache) *proxyEnv {
	t.Helper()
	if rc.MaxBytes == 0 {
		rc.MaxBytes = 1 << 20
	}
	if rc.MaxObjectBytes == 0 {
		rc.MaxObjectBytes = 64 << 10
	}
	if rc.CoalesceTimeout == 0 {
		rc.CoalesceTimeout = config.Duration(10 * time.Second)
	}
	if rc.CredentialHeaders == nil {
		rc.CredentialHeaders = []string{"cookie"}
	}
	return newPathProxy(t, path, []string{b.addr}, Route{Cache: &rc}, "round_robin", Limits{})
}

// cacheOf is the cache of the proxy's route.
func cacheOf(p *proxyEnv) *httpcache.Cache { return p.srv.handler.Load().table.Routes[0].cache }

// fetch is a GET through the proxy with header pairs hdr.
func fetch(t *testing.T, client *http.Client, addr, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	return send(t, client, http.MethodGet, addr, path, hdr...)
}

func send(t *testing.T, client *http.Client, method, addr, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, string(body)
}

func cacheable(body string, cc string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", cc)
		io.WriteString(w, body)
	}
}

// TestCacheHitAfterMiss: on every path, the second GET is served from the
// cache (the backend saw one), with an Age, and a HEAD too.
func TestCacheHitAfterMiss(t *testing.T) {
	t.Parallel()
	for _, p := range requestPaths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			b := newCountingBackend(t, cacheable("hello", "max-age=60"))
			px := cacheProxy(t, p.path, b, RouteCache{})
			c := &http.Client{}
			for i := range 3 {
				resp, body := fetch(t, c, px.addr, "/h?q=1")
				if resp.StatusCode != 200 || body != "hello" {
					t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
				}
				if i > 0 && resp.Header.Get("Age") == "" {
					t.Errorf("request %d: no Age on a hit", i)
				}
				if i > 0 && resp.Header.Get("X-Attache-Attempts") != "" {
					t.Errorf("request %d: a hit carries X-Attache-Attempts", i)
				}
			}
			resp, body := send(t, c, http.MethodHead, px.addr, "/h?q=1")
			if resp.StatusCode != 200 || body != "" || resp.ContentLength != 5 {
				t.Errorf("HEAD: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
			}
			fetch(t, c, px.addr, "/h?q=2")
			if n := b.count("/h"); n != 2 {
				t.Errorf("backend saw %d requests, want 2 (one per query)", n)
			}
			s := cacheOf(px).Stats()
			if s.Lookups[httpcache.Hit] != 3 || s.Lookups[httpcache.Miss] != 2 || s.Entries != 2 || s.Bytes <= 0 {
				t.Errorf("stats %+v, want 3 hits, 2 misses, 2 entries", s)
			}
		})
	}
}

func TestCacheMaxAgeExpiry(t *testing.T) {
	t.Parallel()
	b := newCountingBackend(t, cacheable("x", "max-age=1"))
	px := cacheProxy(t, onEngine, b, RouteCache{})
	c := &http.Client{}
	fetch(t, c, px.addr, "/e")
	fetch(t, c, px.addr, "/e")
	if n := b.count("/e"); n != 1 {
		t.Fatalf("backend saw %d, want 1", n)
	}
	time.Sleep(1100 * time.Millisecond)
	fetch(t, c, px.addr, "/e")
	if n := b.count("/e"); n != 2 {
		t.Errorf("after max-age: backend saw %d, want 2", n)
	}
}

func TestCacheVary(t *testing.T) {
	t.Parallel()
	b := newCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		io.WriteString(w, "lang="+r.Header.Get("Accept-Language"))
	})
	px := cacheProxy(t, onEngine, b, RouteCache{})
	c := &http.Client{}
	for range 2 {
		for _, l := range []string{"en", "fr", "de"} {
			if _, body := fetch(t, c, px.addr, "/v", "Accept-Language", l); body != "lang="+l {
				t.Errorf("Accept-Language %s: got %q", l, body)
			}
		}
	}
	if n := b.count("/v"); n != 3 {
		t.Errorf("backend saw %d, want 3 (one per variant)", n)
	}
}

func TestCacheETagRevalidation(t *testing.T) {
	t.Parallel()
	var notModified atomic.Int32
	b := newCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("ETag", `"v7"`)
		if r.Header.Get("If-None-Match") == `"v7"` {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "tagged body")
	})
	px := cacheProxy(t, onEngine, b, RouteCache{})
	c := &http.Client{}
	fetch(t, c, px.addr, "/t")
	resp, body := fetch(t, c, px.addr, "/t")
	if resp.StatusCode != 200 || body != "tagged body" {
		t.Errorf("revalidated: %d %q", resp.StatusCode, body)
	}
	if got := b.header("/t", "If-None-Match"); got != `"v7"` {
		t.Errorf("backend saw If-None-Match %q, want \"v7\"", got)
	}
	if notModified.Load() != 1 {
		t.Errorf("backend answered %d 304s, want 1", notModified.Load())
	}
	// The client's own validator gets a 304 from attache.
	resp, body = fetch(t, c, px.addr, "/t", "If-None-Match", `"v7"`)
	if resp.StatusCode != http.StatusNotModified || body != "" {
		t.Errorf("client conditional: %d %q, want 304", resp.StatusCode, body)
	}
	if s := cacheOf(px).Stats(); s.Lookups[httpcache.Revalidated] != 2 {
		t.Errorf("revalidated %d, want 2", s.Lookups[httpcache.Revalidated])
	}
}

func TestCacheStaleIfError(t *testing.T) {
	t.Parallel()
	b := newCountingBackend(t, cacheable("good", "max-age=1, stale-if-error=300"))
	px := cacheProxy(t, onEngine, b, RouteCache{})
	c := &http.Client{}
	fetch(t, c, px.addr, "/s")
	time.Sleep(1100 * time.Millisecond)
	b.set(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "broken", http.StatusInternalServerError) })
	resp, body := fetch(t, c, px.addr, "/s")
	if resp.StatusCode != 200 || body != "good" {
		t.Errorf("backend 500: got %d %q, want the stale 200", resp.StatusCode, body)
	}
	b.srv.Close() // down: attache's own 503 is an error too
	resp, body = fetch(t, c, px.addr, "/s")
	if resp.StatusCode != 200 || body != "good" {
		t.Errorf("backend down: got %d %q, want the stale 200", resp.StatusCode, body)
	}
	if s := cacheOf(px).Stats(); s.Lookups[httpcache.Stale] != 2 {
		t.Errorf("stale %d, want 2", s.Lookups[httpcache.Stale])
	}
}

func TestCacheStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	b := newCountingBackend(t, cacheable("old", "max-age=1, stale-while-revalidate=300"))
	px := cacheProxy(t, onEngine, b, RouteCache{})
	c := &http.Client{}
	fetch(t, c, px.addr, "/w")
	time.Sleep(1100 * time.Millisecond)
	gate := make(chan struct{})
	b.set(func(w http.ResponseWriter, r *http.Request) {
		<-gate
		cacheable("new", "max-age=300")(w, r)
	})
	for i := range 5 {
		if _, body := fetch(t, c, px.addr, "/w"); body != "old" {
			t.Errorf("request %d during revalidation: %q, want old", i, body)
		}
	}
	close(gate)
	waitFor(t, "the background revalidation", func() bool {
		_, body := fetch(t, c, px.addr, "/w")
		return body == "new"
	})
	if n := b.count("/w"); n != 2 {
		t.Errorf("backend saw %d, want 2 (one background revalidation)", n)
	}
}

func TestCacheCoalescing(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	var inflight atomic.Int32
	b := newCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		<-gate
		cacheable("shared", "max-age=60")(w, r)
	})
	px := cacheProxy(t, onEngine, b, RouteCache{})
	const n = 10
	var wg sync.WaitGroup
	bodies := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, body := fetch(t, &http.Client{}, px.addr, "/c")
			bodies <- body
		}()
	}
	waitFor(t, "the first upstream call", func() bool { return inflight.Load() == 1 })
	time.Sleep(50 * time.Millisecond) // the others join it (a late one is a hit)
	close(gate)
	wg.Wait()
	close(bodies)
	for body := range bodies {
		if body != "shared" {
			t.Errorf("body %q", body)
		}
	}
	if got := b.count("/c"); got != 1 {
		t.Errorf("backend saw %d requests for %d concurrent clients, want 1", got, n)
	}
}

func TestCacheNotStored(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, cc string
		hdr      []string
	}{
		{"authorization", "max-age=60", []string{"Authorization", "Bearer abc"}},
		{"cookie", "max-age=60", []string{"Cookie", "session=1"}},
		{"no-store", "no-store, max-age=60", nil},
		{"private OK, request no-store", "private, max-age=60", []string{"Cache-Control", "no-store"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newCountingBackend(t, cacheable("p", tc.cc))
			px := cacheProxy(t, onEngine, b, RouteCache{})
			c := &http.Client{}
			fetch(t, c, px.addr, "/n", tc.hdr...)
			fetch(t, c, px.addr, "/n", tc.hdr...)
			if n := b.count("/n"); n != 2 {
				t.Errorf("backend saw %d, want 2", n)
			}
		})
	}
	t.Run("private is stored", func(t *testing.T) {
		t.Parallel()
		b := newCountingBackend(t, cacheable("p", "private, max-age=60"))
		px := cacheProxy(t, onEngine, b, RouteCache{})
		fetch(t, &http.Client{}, px.addr, "/p")
		fetch(t, &http.Client{}, px.addr, "/p")
		if n := b.count("/p"); n != 1 {
			t.Errorf("backend saw %d, want 1", n)
		}
	})
}

func TestCacheBounds(t *testing.T) {
	t.Parallel()
	b := newCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, strings.Repeat("z", size))
	})
	px := cacheProxy(t, onEngine, b, RouteCache{MaxBytes: 4000, MaxObjectBytes: 1500})
	c := &http.Client{}
	for _, q := range []string{"a", "b", "c"} {
		fetch(t, c, px.addr, "/l?size=1000&k="+q)
	}
	if s := cacheOf(px).Stats(); s.Bytes > 4000 || s.Entries != 2 {
		t.Errorf("bytes %d entries %d, want at most 4000 in 2 entries", s.Bytes, s.Entries)
	}
	fetch(t, c, px.addr, "/l?size=1000&k=c") // the newest: kept
	fetch(t, c, px.addr, "/l?size=1000&k=a") // the oldest: evicted
	if n := b.count("/l"); n != 4 {
		t.Errorf("backend saw %d, want 4 (k=a evicted, k=c kept)", n)
	}
	for range 2 {
		if _, body := fetch(t, c, px.addr, "/big?size=100000"); len(body) != 100000 {
			t.Errorf("oversized: %d bytes, want 100000", len(body))
		}
	}
	if n := b.count("/big"); n != 2 {
		t.Errorf("oversized: backend saw %d, want 2 (streamed, not stored)", n)
	}
}

func TestCacheInvalidatedByPost(t *testing.T) {
	t.Parallel()
	b := newCountingBackend(t, cacheable("v", "max-age=60"))
	px := cacheProxy(t, onEngine, b, RouteCache{})
	c := &http.Client{}
	fetch(t, c, px.addr, "/i")
	fetch(t, c, px.addr, "/i")
	send(t, c, http.MethodPost, px.addr, "/i")
	fetch(t, c, px.addr, "/i")
	if n := b.count("/i"); n != 3 {
		t.Errorf("backend saw %d, want 3 (GET, POST, GET after the POST)", n)
	}
}

// TestCacheCarriedOverReload: a reload that leaves a route's cache block
// alone keeps its entries; one that changes it starts empty. /status
// shows the cache.
func TestCacheCarriedOverReload(t *testing.T) {
	t.Parallel()
	c := &Cluster{}
	rc := func(max int) *RouteCache {
		return &RouteCache{MaxBytes: max, MaxObjectBytes: 100, CoalesceTimeout: config.Duration(time.Second)}
	}
	listener := func(max int) config.Listener {
		return listenerOf("l",
			Route{Name: "cached", Match: RouteMatch{Prefix: "/"}, To: []RouteTarget{{Cluster: "c", Weight: 1}}, Cache: rc(max)})
	}
	table := func(l config.Listener, prev *instance) *Table {
		tb := NewTable(l, func(string) *Cluster { return c })
		if prev != nil {
			carryCaches(tb, l, prev)
		}
		return tb
	}
	first := &instance{handler: &Handler{table: table(listener(1000), nil), listener: "l"}}
	same := &instance{handler: &Handler{table: table(listener(1000), first), listener: "l"}}
	changed := &instance{handler: &Handler{table: table(listener(2000), first), listener: "l"}}
	if same.handler.table.Routes[0].cache != first.handler.table.Routes[0].cache {
		t.Error("an unchanged cache block got a new cache")
	}
	if changed.handler.table.Routes[0].cache == first.handler.table.Routes[0].cache {
		t.Error("a changed cache block kept the old cache")
	}
	ch := make(chan prometheus.Metric, 16)
	changed.Collect(ch)
	close(ch)
	var descs []string
	for m := range ch {
		descs = append(descs, m.Desc().String())
	}
	if len(descs) != len(httpcache.Results)+2 {
		t.Errorf("collected %d series, want %d (a lookup counter per result, bytes, entries)", len(descs), len(httpcache.Results)+2)
	}
	st := changed.Status()
	if len(st) != 1 || st[0].Key != "cache" {
		t.Fatalf("status %+v, want a cache line", st)
	}
	if cs := st[0].Value.([]cacheStatus); len(cs) != 1 || cs[0].Route != "cached" || cs[0].MaxBytes != 2000 {
		t.Errorf("cache status %+v", cs)
	}
}
