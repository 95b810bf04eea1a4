package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// rateLimitPaths are the wire paths a route limit is checked on: the
// engine, the goroutine fast path and net/http.
var rateLimitPaths = map[string]string{"engine": "", "goroutine": "goroutine", "net/http": "off"}

// pathEnv is the environment that selects a wire path: "" or "engine"
// the engine (the default), "goroutine" the goroutine fast path
// (ATTACHE_EVENT_LOOPS=off), "off" net/http (ATTACHE_HTTP_FAST_PATH=off).
func pathEnv(v string) map[string]string {
	switch v {
	case "", "engine":
		return nil
	case "goroutine":
		return map[string]string{"ATTACHE_EVENT_LOOPS": "off"}
	}
	return map[string]string{"ATTACHE_HTTP_FAST_PATH": v}
}

// TestHTTPRateLimitRoute: through a real attache listener, on each wire
// path, a route's bucket lets its burst through and then answers 429 with
// Retry-After and the RateLimit fields, never reaching the backend; keys
// (a header, the end user) get buckets of their own, requests without a
// key share one, and the end user is read from X-Forwarded-For only
// through trusted hops.
func TestHTTPRateLimitRoute(t *testing.T) {
	t.Parallel()
	for name, path := range rateLimitPaths {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testRateLimitRoute(t, pathEnv(path))
		})
	}
}

func testRateLimitRoute(t *testing.T, env map[string]string) {
	b := newBackend(t, "api", false)
	h := start(t, yamlf(`
listeners:
  - name: web
    address: "127.0.0.1:0"
    protocol: http
    routes:
      - name: burst
        match: {prefix: /burst}
        to: [{cluster: api}]
        rate_limit: {requests: 1, per: 1h, burst: 3}
      - name: keyed
        match: {prefix: /keyed}
        to: [{cluster: api}]
        rate_limit: {requests: 1, per: 1h, burst: 2, key: {header: x-api-key}}
      - name: evict
        match: {prefix: /evict}
        to: [{cluster: api}]
        rate_limit: {requests: 1, per: 1h, burst: 1, key: {header: x-api-key}, max_keys: 3}
      - name: user
        match: {prefix: /user}
        to: [{cluster: api}]
        rate_limit: {requests: 1, per: 1h, burst: 1, key: {end_user: true}}
      - name: user-ingress
        match: {prefix: /ingress}
        to: [{cluster: api}]
        rate_limit: {requests: 1, per: 1h, burst: 1, key: {end_user: true, trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]}}
      - name: user-untrusted
        match: {prefix: /untrusted}
        to: [{cluster: api}]
        rate_limit: {requests: 1, per: 1h, burst: 1, key: {end_user: true, trusted_proxies: []}}
clusters:
  - {name: api, endpoints: ["%s"]}
`, b.addr), env)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	t.Cleanup(client.CloseIdleConnections)
	base := "http://" + h.addr("web")
	get := func(path string, hdr map[string]string) *http.Response {
		t.Helper()
		resp, _ := httpGet(t, client, base+path, hdr)
		return resp
	}
	expect := func(what, path string, hdr map[string]string, want int) *http.Response {
		t.Helper()
		resp := get(path, hdr)
		if resp.StatusCode != want {
			t.Fatalf("%s: %s %v: status %d, want %d", what, path, hdr, resp.StatusCode, want)
		}
		return resp
	}

	t.Run("burst then 429", func(t *testing.T) {
		before := b.hits.Load()
		for i := range 3 {
			expect(fmt.Sprint("request ", i+1, " of the burst"), "/burst", nil, 200)
		}
		resp, body := httpGet(t, client, base+"/burst", nil)
		if resp.StatusCode != 429 {
			t.Fatalf("over the burst: status %d, want 429", resp.StatusCode)
		}
		for k, want := range map[string]string{
			"Retry-After":      "3600",
			"Ratelimit-Policy": `"burst";q=1;w=3600`,
			"Ratelimit":        `"burst";r=0;t=10800`,
			"X-Attache-Reason": "rate limited",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: got %q, want %q", k, got, want)
			}
		}
		if want := "attache: rate limited (route burst)\n"; body != want {
			t.Errorf("body %q, want %q", body, want)
		}
		if got := b.hits.Load() - before; got != 3 {
			t.Errorf("backend saw %d requests, want 3 (the refused one is not sent)", got)
		}
		// The connection stays usable after a 429.
		expect("again", "/burst", nil, 429)
	})

	t.Run("per key", func(t *testing.T) {
		a, bb := map[string]string{"X-Api-Key": "alice"}, map[string]string{"X-Api-Key": "bob"}
		expect("alice 1", "/keyed", a, 200)
		expect("alice 2", "/keyed", a, 200)
		expect("alice over", "/keyed", a, 429)
		expect("bob 1", "/keyed", bb, 200)
		expect("bob 2", "/keyed", bb, 200)
		expect("bob over", "/keyed", bb, 429)
		// Requests without the key share a bucket of their own.
		expect("no key 1", "/keyed", nil, 200)
		expect("no key 2", "/keyed", nil, 200)
		expect("no key over", "/keyed", nil, 429)
		expect("carol", "/keyed", map[string]string{"X-Api-Key": "carol"}, 200)
	})

	t.Run("keys bounded", func(t *testing.T) {
		for i := range 50 {
			expect("random key", "/evict", map[string]string{"X-Api-Key": fmt.Sprint("k", i)}, 200)
		}
		var st struct {
			Listeners []struct {
				Name       string
				RateLimits []struct {
					Route     string
					Keys      int
					Evictions int
					MaxKeys   int `json:"max_keys"`
				} `json:"rate_limits"`
			}
		}
		raw, _ := json.Marshal(h.app.Status())
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, l := range st.Listeners {
			for _, r := range l.RateLimits {
				if r.Route == "evict" {
					found = true
					if r.Keys != 3 || r.Evictions != 47 || r.MaxKeys != 3 {
						t.Errorf("/status evict: keys %d evictions %d max_keys %d, want 3 47 3", r.Keys, r.Evictions, r.MaxKeys)
					}
				}
			}
		}
		if !found {
			t.Fatalf("/status has no rate limit of route evict:\n%s", raw)
		}
		if got := h.metric(`attache_http_ratelimit_keys{listener="web",route="evict"}`); got != "3" {
			t.Errorf("attache_http_ratelimit_keys: got %q, want 3", got)
		}
		// The most recent key is still remembered (empty); the first was forgotten (full again).
		expect("recent key", "/evict", map[string]string{"X-Api-Key": "k49"}, 429)
		expect("evicted key", "/evict", map[string]string{"X-Api-Key": "k0"}, 200)
	})

	t.Run("end user", func(t *testing.T) {
		xff := func(v string) map[string]string { return map[string]string{"X-Forwarded-For": v} }
		expect("user 7", "/user", xff("198.51.100.7"), 200)
		expect("user 7 again", "/user", xff("198.51.100.7"), 429)
		// What a client wrote to the left of the end user is not read:
		// it cannot pick another bucket.
		expect("user 7 with a made-up hop", "/user", xff("203.0.113.99, 198.51.100.7"), 429)
		// The rightmost untrusted entry is the end user.
		expect("user 9", "/user", xff("198.51.100.7, 203.0.113.9"), 200)
		// No end user (the application's own request): the shared bucket.
		expect("no end user", "/user", nil, 200)
		expect("loopback end user", "/user", xff("127.0.0.1"), 429)
		// A trusted ingress hop is skipped.
		expect("via ingress", "/ingress", xff("198.51.100.8, 10.1.2.3"), 200)
		expect("same user via ingress", "/ingress", xff("198.51.100.8, 10.9.9.9"), 429)
		expect("another user via ingress", "/ingress", xff("198.51.100.10, 10.1.2.3"), 200)
		// Without trusted hops the header is never read: every request is
		// the application's (loopback), in one shared bucket.
		expect("untrusted 1", "/untrusted", xff("198.51.100.7"), 200)
		expect("untrusted 2", "/untrusted", xff("198.51.100.20"), 429)
	})

	if got := h.metric(`attache_http_ratelimit_requests_total{listener="web",result="limited",route="burst"}`); got != "2" {
		t.Errorf("limited metric: got %q, want 2", got)
	}
	if got := h.metric(`attache_http_ratelimit_requests_total{listener="web",result="allowed",route="burst"}`); got != "3" {
		t.Errorf("allowed metric: got %q, want 3", got)
	}
	if got := h.metric(`attache_http_requests_total{cluster="api",code="4xx",listener="web",route="burst"}`); got != "2" {
		t.Errorf("requests 4xx metric: got %q, want 2", got)
	}
}

// TestHTTPRateLimitHeadersAlways: with headers: always, allowed responses
// carry the RateLimit fields too, with the requests left.
func TestHTTPRateLimitHeadersAlways(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "api", false)
	h := start(t, yamlf(`
listeners:
  - name: web
    address: "127.0.0.1:0"
    protocol: http
    routes:
      - name: api
        match: {prefix: /}
        to: [{cluster: api}]
        rate_limit: {requests: 60, per: 1m, burst: 3, headers: always}
clusters:
  - {name: api, endpoints: ["%s"]}
`, b.addr), nil)
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	for i, want := range []string{`"api";r=2;t=1`, `"api";r=1;t=2`, `"api";r=0;t=3`} {
		resp, _ := httpGet(t, client, "http://"+h.addr("web")+"/", nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "api" {
			t.Fatalf("request %d: status %d from %q, want 200 from api", i, resp.StatusCode, resp.Header.Get("X-Backend"))
		}
		if got := resp.Header.Get("RateLimit"); got != want {
			t.Errorf("request %d: RateLimit %q, want %q", i, got, want)
		}
		if got := resp.Header.Get("RateLimit-Policy"); got != `"api";q=60;w=60` {
			t.Errorf("request %d: RateLimit-Policy %q", i, got)
		}
	}
	resp, _ := httpGet(t, client, "http://"+h.addr("web")+"/", nil)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("over: status %d Retry-After %q, want 429, 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestHTTPRateLimitUpstreamQueue: a cluster's rate limit makes requests
// beyond its tokens wait in its queue and then go; with the queue full a
// request is refused at once with 429; a client that goes away while it
// waits leaves the queue and gives its token back.
func TestHTTPRateLimitUpstreamQueue(t *testing.T) {
	t.Parallel()
	fast, slow := newBackend(t, "fast", false), newBackend(t, "slow", false)
	h := start(t, yamlf(`
listeners:
  - name: web
    address: "127.0.0.1:0"
    protocol: http
    routes:
      - {match: {prefix: /fast}, to: [{cluster: fast}]}
      - {match: {prefix: /slow}, to: [{cluster: slow}], timeout: 1m}
  - name: other
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: slow}], timeout: 1m}]
clusters:
  - name: fast
    endpoints: ["%s"]
    rate_limit: {requests: 2, per: 1s, burst: 1, queue: {max: 10, timeout: 5s}}
  - name: slow
    endpoints: ["%s"]
    rate_limit: {requests: 1, per: 10s, burst: 1, queue: {max: 1, timeout: 50s}}
`, testenv.FreePort(t), fast.addr, slow.addr), nil)
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	web, other := "http://"+h.addr("web"), "http://"+h.addr("other")

	t.Run("wait then go", func(t *testing.T) {
		var wg sync.WaitGroup
		codes := make([]int, 4)
		for i := range codes {
			wg.Go(func() {
				resp, err := client.Get(web + "/fast")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes[i] = resp.StatusCode
			})
		}
		wg.Wait()
		for i, c := range codes {
			if c != 200 {
				t.Errorf("request %d: status %d, want 200 after waiting", i, c)
			}
		}
		if fast.hits.Load() != 4 {
			t.Errorf("backend saw %d, want 4", fast.hits.Load())
		}
		queued, _ := strconv.Atoi(h.metric(`attache_http_ratelimit_upstream_requests_total{cluster="fast",result="queued"}`))
		allowed, _ := strconv.Atoi(h.metric(`attache_http_ratelimit_upstream_requests_total{cluster="fast",result="allowed"}`))
		if queued < 1 || queued+allowed != 4 {
			t.Errorf("queued %d allowed %d, want at least 1 queued, 4 in all", queued, allowed)
		}
		if got := h.metric(`attache_http_ratelimit_upstream_wait_seconds_count{cluster="fast"}`); got != strconv.Itoa(queued) {
			t.Errorf("wait histogram count %q, want %d", got, queued)
		}
	})

	t.Run("queue full, cancel", func(t *testing.T) {
		if resp, _ := httpGet(t, client, web+"/slow", nil); resp.StatusCode != 200 {
			t.Fatalf("first: status %d, want 200", resp.StatusCode)
		}
		// The second waits (10s for a token): it fills the queue of one.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		waited := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", web+"/slow", nil)
			resp, err := (&http.Client{}).Do(req)
			if err == nil {
				resp.Body.Close()
				err = fmt.Errorf("status %d before it was cancelled", resp.StatusCode)
			}
			waited <- err
		}()
		waiting := func(n string) func() bool {
			return func() bool {
				return h.metric(`attache_http_ratelimit_upstream_queue_depth{cluster="slow"}`) == n
			}
		}
		eventually(t, 5*time.Second, "a request in the queue", waiting("1"))
		// The queue is full: refused at once, from any listener using the cluster.
		start := time.Now()
		resp, body := httpGet(t, client, other+"/", nil)
		if resp.StatusCode != 429 {
			t.Fatalf("queue full: status %d, want 429", resp.StatusCode)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("queue full: answered after %v, want at once", d)
		}
		if got := resp.Header.Get("X-Attache-Reason"); got != "upstream rate limited" {
			t.Errorf("reason %q", got)
		}
		if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 11 || ra > 20 {
			t.Errorf("Retry-After %q, want about 20 (the token after the waiting one's)", resp.Header.Get("Retry-After"))
		}
		if !strings.Contains(body, "cluster slow") {
			t.Errorf("body %q", body)
		}
		// The waiting client goes away: it leaves the queue, unanswered.
		cancel()
		if err := <-waited; err == nil || !strings.Contains(err.Error(), "context canceled") {
			t.Fatalf("cancelled client: %v, want context canceled", err)
		}
		eventually(t, 5*time.Second, "the queue empty", waiting("0"))
		if got := h.metric(`attache_http_ratelimit_upstream_requests_total{cluster="slow",result="cancelled"}`); got != "1" {
			t.Errorf("cancelled metric %q, want 1", got)
		}
		// Its place is free again: the next request queues, not refused.
		ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel2()
		req, _ := http.NewRequestWithContext(ctx2, "GET", web+"/slow", nil)
		if resp, err := (&http.Client{}).Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("after the cancel: status %d, want a wait (the queue has room)", resp.StatusCode)
		}
		if slow.hits.Load() != 1 {
			t.Errorf("slow backend saw %d, want 1", slow.hits.Load())
		}
		raw, _ := json.Marshal(h.app.Status())
		if want := `"rate_limit":{"requests":1,"per":"10s","burst":1,"queue_max":1,"queue_timeout":"50s","waiting":`; !strings.Contains(string(raw), want) {
			t.Errorf("/status has no %s:\n%s", want, raw)
		}
	})
}

// TestHTTPRateLimitReload: a reload that keeps a route's name and limit
// keeps its buckets (a client does not get a full burst again); one that
// changes the limit starts them afresh.
func TestHTTPRateLimitReload(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "api", false)
	addr := testenv.FreePort(t)
	cfg := func(extra string, burst int) string {
		return yamlf(`
listeners:
  - name: web
    address: "%s"
    protocol: http
    routes:
      - name: limited
        match: {prefix: /}
        to: [{cluster: api}]
        rate_limit: {requests: 1, per: 1h, burst: %d}
%sclusters:
  - {name: api, endpoints: ["%s"]}
`, addr, burst, extra, b.addr)
	}
	h := start(t, cfg("", 1), nil)
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	status := func() int {
		resp, _ := httpGet(t, client, "http://"+addr+"/", nil)
		return resp.StatusCode
	}
	if s := status(); s != 200 {
		t.Fatalf("first: %d, want 200", s)
	}
	if s := status(); s != 429 {
		t.Fatalf("second: %d, want 429", s)
	}
	reloads := func() string { return h.metric(`attache_config_reloads_total{result="success"}`) }
	before := reloads()
	h.rewrite(cfg("      - {name: other, match: {prefix: /other}, to: [{cluster: api}]}\n", 1))
	eventually(t, 10*time.Second, "a reload", func() bool { return reloads() != before })
	if s := status(); s != 429 {
		t.Fatalf("after a reload that kept the limit: %d, want 429 (the bucket kept)", s)
	}
	before = reloads()
	h.rewrite(cfg("", 2))
	eventually(t, 10*time.Second, "a reload", func() bool { return reloads() != before })
	if s := status(); s != 200 {
		t.Fatalf("after a reload that changed the limit: %d, want 200 (a new bucket)", s)
	}
}

// TestHTTPRateLimitUpstreamCacheHit: a response cache hit sends nothing
// upstream and takes no token of the cluster's rate limit.
func TestHTTPRateLimitUpstreamCacheHit(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "api", false)
	h := start(t, yamlf(`
listeners:
  - name: web
    address: "127.0.0.1:0"
    protocol: http
    routes:
      - {match: {prefix: /}, to: [{cluster: api}], cache: {default_ttl: 1m}}
clusters:
  - name: api
    endpoints: ["%s"]
    rate_limit: {requests: 1, per: 1h, burst: 1}
`, b.addr), nil)
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	for i := range 5 {
		resp, _ := httpGet(t, client, "http://"+h.addr("web")+"/same", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d, want 200 (from the cache after the first)", i, resp.StatusCode)
		}
	}
	if resp, _ := httpGet(t, client, "http://"+h.addr("web")+"/other", nil); resp.StatusCode != 429 {
		t.Fatalf("a miss after the one token: status %d, want 429", resp.StatusCode)
	}
	if b.hits.Load() != 1 {
		t.Errorf("backend saw %d, want 1", b.hits.Load())
	}
}
