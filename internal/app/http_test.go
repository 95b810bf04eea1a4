package app

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"

	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/protocols"
	"github.com/attache-proxy/attache/internal/testenv"
)

// backend is a real net/http server that says who it is and echoes what it
// saw, with hooks to fail or stall.
type backend struct {
	name  string
	addr  string
	hits  atomic.Int64
	fail  atomic.Int32 // status to answer with, 0 for 200
	delay atomic.Int64 // nanoseconds before answering
	proto atomic.Value // protocol of the last request
	last  atomic.Value // headers of the last request
	body  atomic.Value // body of the last request
}

func newBackend(t *testing.T, name string, h2c bool) *backend {
	t.Helper()
	b := &backend{name: name}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if b.fail.Load() != 0 {
			w.WriteHeader(int(b.fail.Load()))
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.proto.Store(r.Proto)
		b.last.Store(r.Header.Clone())
		body, _ := io.ReadAll(r.Body)
		b.body.Store(string(body))
		if d := b.delay.Load(); d > 0 {
			select {
			case <-time.After(time.Duration(d)):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("X-Backend", name)
		if code := b.fail.Load(); code != 0 {
			w.WriteHeader(int(code))
		}
		fmt.Fprintf(w, "%s %s %s host=%s", name, r.Method, r.URL.Path, r.Host)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	if h2c {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	b.addr = ln.Addr().String()
	return b
}

func httpGet(t *testing.T, client *http.Client, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestHTTPOnNetHTTP runs the HTTP tests again with the fast path off
// (ATTACHE_HTTP_FAST_PATH=off, set by start for its subtests), so that both
// wire paths keep every behaviour.
func TestHTTPOnNetHTTP(t *testing.T) {
	for name, f := range map[string]func(*testing.T){
		"Routing": TestHTTPRouting, "SplitAndSticky": TestHTTPSplitAndSticky, "Retries": TestHTTPRetries,
		"Timeouts": TestHTTPTimeouts, "CircuitBreaker": TestHTTPCircuitBreaker, "Overloaded": TestHTTPOverloaded,
		"Passive5xxAndHealth": TestHTTPPassive5xxAndHealth, "HTTP2AndH2C": TestHTTP2AndH2C, "WebSocket": TestWebSocket,
		"LoopbackHost": TestHTTPLoopbackHostBecomesUpstreamHost, "GRPC": TestGRPCStreamingThroughAttache,
		"Credentials": TestHTTPCredentials, "StickyEndUser": TestHTTPStickyEndUser,
	} {
		t.Run(name, f)
	}
}

func TestHTTPRouting(t *testing.T) {
	t.Parallel()
	prod, canary, api := newBackend(t, "prod", false), newBackend(t, "canary", false), newBackend(t, "api", false)
	h := start(t, yamlf(`
listeners:
  - name: web
    address: "127.0.0.1:0"
    protocol: http
    routes:
      - match: {prefix: /api/, headers: {x-canary: "1"}, methods: [GET]}
        to: [{cluster: canary}]
      - match: {regex: "/api/v[0-9]+/.*"}
        to: [{cluster: api}]
        rewrite: {prefix: /v2/}
        headers: {add: {x-env: prod}, remove: [x-debug]}
      - match: {path: /exact}
        to: [{cluster: prod}]
      - match: {prefix: /static/, host: "*.example.com"}
        to: [{cluster: prod}]
clusters:
  - {name: prod, endpoints: ["%s"]}
  - {name: canary, endpoints: ["%s"]}
  - {name: api, endpoints: ["%s"]}
`, prod.addr, canary.addr, api.addr), nil)
	base := "http://" + h.addr("web")
	c := &http.Client{}
	for _, tc := range []struct {
		name, path string
		hdr        map[string]string
		want       string
		code       int
	}{
		{"header route", "/api/v1/x", map[string]string{"X-Canary": "1"}, "canary GET /api/v1/x", 200},
		{"regex route", "/api/v1/x", nil, "api GET /api/v1/x", 200},
		{"exact", "/exact", nil, "prod GET /exact", 200},
		{"exact is exact", "/exact/more", nil, "", 404},
		{"host wildcard", "/static/a", map[string]string{"Host": "cdn.example.com"}, "prod GET /static/a", 200},
		{"host mismatch", "/static/a", map[string]string{"Host": "evil.com"}, "", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", base+tc.path, nil)
			for k, v := range tc.hdr {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.HasPrefix(string(body), tc.want) {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tc.code, tc.want)
			}
			if tc.code == 404 && resp.Header.Get("X-Attache-Reason") != "no route matched" {
				t.Errorf("404 without x-attache-reason: %v", resp.Header)
			}
		})
	}
	// the regex route rewrote the prefix? (prefix rewrite applies to prefix routes only)
	// headers: added, removed, forwarded, request id and traceparent, hop-by-hop stripped
	req, _ := http.NewRequest("GET", base+"/api/v3/y", nil)
	req.Header.Set("X-Debug", "secret")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "must not pass")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	got := api.last.Load().(http.Header)
	for k, want := range map[string]string{"X-Env": "prod", "X-Debug": "", "X-Hop": "", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http"} {
		if got.Get(k) != want {
			t.Errorf("upstream header %s: got %q, want %q", k, got.Get(k), want)
		}
	}
	if len(got.Get("X-Request-Id")) != 32 || !strings.HasPrefix(got.Get("Traceparent"), "00-") {
		t.Errorf("request id %q / traceparent %q not added", got.Get("X-Request-Id"), got.Get("Traceparent"))
	}
	// an app's own traceparent is passed through unchanged
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	httpGet(t, c, base+"/api/v3/z", map[string]string{"Traceparent": tp})
	if got := api.last.Load().(http.Header).Get("Traceparent"); got != tp {
		t.Errorf("traceparent: got %q, want %q", got, tp)
	}
}

// TestHTTPSplitAndSticky: a 90/10 split measured over 10,000 requests, and
// stickiness by client IP (clients on 127.0.0.0/8 addresses, which are no
// end user's and so all on the pod's side) and by header.
func TestHTTPSplitAndSticky(t *testing.T) {
	t.Parallel()
	a, b := newBackend(t, "a", false), newBackend(t, "b", false)
	h := start(t, yamlf(`
listeners:
  - name: split
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: a, weight: 90}, {cluster: b, weight: 10}]}]
  - name: sticky-ip
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: a, weight: 50}, {cluster: b, weight: 50}], sticky: {by: client_ip}}]
  - name: sticky-header
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: a, weight: 50}, {cluster: b, weight: 50}], sticky: {by: header, name: x-user-id}}]
clusters:
  - {name: a, endpoints: ["%s"]}
  - {name: b, endpoints: ["%s"]}
`, testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), a.addr, b.addr), nil)

	const n = 10000
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var wg sync.WaitGroup
	var toB atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/8; i++ {
				resp, err := client.Get("http://" + h.addr("split") + "/")
				if err != nil {
					t.Error(err)
					return
				}
				if resp.Header.Get("X-Backend") == "b" {
					toB.Add(1)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if share := float64(toB.Load()) / n; math.Abs(share-0.10) > 0.02 {
		t.Errorf("b got %.3f of %d requests, want 0.10±0.02", share, n)
	}

	sides := map[string]int{}
	for ip := 2; ip < 42; ip++ {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(ip))}
		cl := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: local}).DialContext, DisableKeepAlives: true}}
		first := ""
		for i := 0; i < 5; i++ {
			resp, _ := httpGet(t, cl, "http://"+h.addr("sticky-ip")+"/", nil)
			side := resp.Header.Get("X-Backend")
			if first == "" {
				first = side
			} else if side != first {
				t.Fatalf("client 127.0.0.%d moved from %s to %s", ip, first, side)
			}
		}
		sides[first]++
	}
	// Loopback addresses are the application's, no end user's: every one
	// lands on the pod's side (TestHTTPStickyEndUser spreads end users).
	if len(sides) != 1 {
		t.Errorf("40 loopback client IPs on both sides, want all on the pod's: %v", sides)
	}
	for u := 0; u < 30; u++ {
		id := fmt.Sprintf("user-%d", u)
		resp, _ := httpGet(t, client, "http://"+h.addr("sticky-header")+"/", map[string]string{"X-User-Id": id})
		for i := 0; i < 3; i++ {
			again, _ := httpGet(t, client, "http://"+h.addr("sticky-header")+"/", map[string]string{"X-User-Id": id})
			if again.Header.Get("X-Backend") != resp.Header.Get("X-Backend") {
				t.Fatalf("%s moved between sides", id)
			}
		}
	}
}

// TestHTTPRetries: GET is retried on another endpoint after a 503; POST is
// not, unless the route opts in; a connect failure is retried for any
// method (nothing was sent).
func TestHTTPRetries(t *testing.T) {
	t.Parallel()
	bad, good := newBackend(t, "bad", false), newBackend(t, "good", false)
	bad.fail.Store(503)
	h := start(t, yamlf(`
listeners:
  - name: safe
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: c}], retries: {attempts: 3, on: [5xx], backoff: {base: 1ms, max: 5ms}}}]
  - name: optin
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: c}], retries: {attempts: 3, on: [5xx], non_idempotent: true, backoff: {base: 1ms, max: 5ms}}}]
  - name: deadfirst
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: d}], retries: {attempts: 2, on: [connect_failure]}}]
clusters:
  - {name: c, endpoints: ["%s", "%s"], balance: first, outlier_detection: {consecutive_failures: 100}}
  - {name: d, endpoints: ["%s", "%s"], balance: first, outlier_detection: {consecutive_failures: 100}}
`, testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), bad.addr, good.addr, deadAddr(t), good.addr), nil)
	c := &http.Client{}
	resp, body := httpGet(t, c, "http://"+h.addr("safe")+"/x", nil)
	if resp.StatusCode != 200 || resp.Header.Get("X-Attache-Attempts") != "2" || !strings.HasPrefix(body, "good") {
		t.Errorf("GET: got %d attempts=%s %q, want 200 from good after 2 attempts", resp.StatusCode, resp.Header.Get("X-Attache-Attempts"), body)
	}
	post := func(listener, payload string) *http.Response {
		resp, err := c.Post("http://"+h.addr(listener)+"/pay", "text/plain", strings.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	before := bad.hits.Load() + good.hits.Load()
	if resp := post("safe", "charge 1"); resp.StatusCode != 503 || resp.Header.Get("X-Attache-Attempts") != "1" {
		t.Errorf("POST without opt-in: got %d attempts=%s, want 503 after 1 attempt", resp.StatusCode, resp.Header.Get("X-Attache-Attempts"))
	}
	if sent := bad.hits.Load() + good.hits.Load() - before; sent != 1 {
		t.Errorf("POST without opt-in reached backends %d times, want 1", sent)
	}
	if resp := post("optin", "charge 2"); resp.StatusCode != 200 || good.body.Load() != "charge 2" {
		t.Errorf("POST opted in: got %d, body at good %q", resp.StatusCode, good.body.Load())
	}
	if resp := post("deadfirst", "charge 3"); resp.StatusCode != 200 || resp.Header.Get("X-Attache-Attempts") != "2" {
		t.Errorf("POST after a connect failure: got %d attempts=%s, want 200 after 2", resp.StatusCode, resp.Header.Get("X-Attache-Attempts"))
	}
	if v := h.metric(`attache_http_retries_total{cluster="c"}`); v == "" {
		t.Error("no retry metric")
	}
}

func TestHTTPTimeouts(t *testing.T) {
	t.Parallel()
	slow, fast := newBackend(t, "slow", false), newBackend(t, "fast", false)
	// Timeouts leave a loaded machine room: the fast backend answers well
	// inside a 1s try, the slow one never inside the route's 5s.
	slow.delay.Store(int64(6 * time.Second))
	h := start(t, yamlf(`
listeners:
  - name: route-timeout
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: slow}], timeout: 300ms}]
  - name: per-try
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: both}], timeout: 5s, retries: {attempts: 2, on: [5xx], per_try_timeout: 1s}}]
clusters:
  - {name: slow, endpoints: ["%s"]}
  - {name: both, endpoints: ["%s", "%s"], balance: first}
`, testenv.FreePort(t), testenv.FreePort(t), slow.addr, slow.addr, fast.addr), nil)
	c := &http.Client{}
	began := time.Now()
	resp, _ := httpGet(t, c, "http://"+h.addr("route-timeout")+"/", nil)
	if resp.StatusCode != 504 || resp.Header.Get("X-Attache-Reason") != "route timeout" {
		t.Errorf("route timeout: got %d %q, want 504", resp.StatusCode, resp.Header.Get("X-Attache-Reason"))
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("route timeout answered after %v", d)
	}
	resp, body := httpGet(t, c, "http://"+h.addr("per-try")+"/", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "fast") || resp.Header.Get("X-Attache-Attempts") != "2" {
		t.Errorf("per-try timeout then retry: got %d %q attempts=%s", resp.StatusCode, body, resp.Header.Get("X-Attache-Attempts"))
	}
}

func TestHTTPCircuitBreaker(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", false)
	b.fail.Store(500)
	h := start(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", protocol: http, cluster: c}]
clusters:
  - {name: c, endpoints: ["%s"], circuit_breaker: {consecutive_failures: 3, open_for: 2s}}
`, b.addr), nil)
	c := &http.Client{}
	url := "http://" + h.addr("l") + "/"
	for i := 0; i < 3; i++ {
		if resp, _ := httpGet(t, c, url, nil); resp.StatusCode != 500 {
			t.Fatalf("request %d: got %d, want the backend's 500", i, resp.StatusCode)
		}
	}
	if v := h.metric(`attache_http_breaker_state{cluster="c"}`); v != "1" {
		t.Errorf("breaker state gauge: got %q, want 1 (open)", v)
	}
	if _, s := h.admin("GET", "/status"); !strings.Contains(s, `"circuit_breaker": "open"`) {
		t.Errorf("/status does not show the open breaker:\n%s", s)
	}
	hits := b.hits.Load()
	resp, _ := httpGet(t, c, url, nil)
	if resp.StatusCode != 503 || resp.Header.Get("X-Attache-Reason") != "circuit breaker open" || b.hits.Load() != hits {
		t.Fatalf("open breaker: got %d %q (backend hit: %v), want 503 without reaching the backend",
			resp.StatusCode, resp.Header.Get("X-Attache-Reason"), b.hits.Load() != hits)
	}
	b.fail.Store(0)
	time.Sleep(2100 * time.Millisecond)
	if resp, _ := httpGet(t, c, url, nil); resp.StatusCode != 200 {
		t.Fatalf("half-open probe: got %d, want 200", resp.StatusCode)
	}
	if resp, _ := httpGet(t, c, url, nil); resp.StatusCode != 200 {
		t.Fatalf("closed again: got %d, want 200", resp.StatusCode)
	}
	if v := h.metric(`attache_http_breaker_transitions_total{cluster="c",state="open"}`); v != "1" {
		t.Errorf("breaker open transitions: got %q, want 1", v)
	}
}

func TestHTTPOverloaded(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", false)
	b.delay.Store(int64(time.Second))
	h := start(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", protocol: http, cluster: c}]
clusters: [{name: c, endpoints: ["%s"], circuit_breaker: {max_requests: 2}}]
`, b.addr), nil)
	var wg sync.WaitGroup
	var ok, over atomic.Int32
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + h.addr("l") + "/")
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == 200:
				ok.Add(1)
			case resp.StatusCode == 503 && resp.Header.Get("X-Attache-Overloaded") == "true":
				over.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 2 || over.Load() != 4 {
		t.Errorf("got %d served and %d overloaded, want 2 and 4", ok.Load(), over.Load())
	}
}

// TestHTTPPassive5xxAndHealth: consecutive 5xx eject an endpoint; an http
// health check marks an endpoint whose /healthz fails unhealthy.
func TestHTTPPassive5xxAndHealth(t *testing.T) {
	t.Parallel()
	bad, good := newBackend(t, "bad", false), newBackend(t, "good", false)
	bad.fail.Store(502)
	sick := newBackend(t, "sick", false)
	sick.fail.Store(500)
	h := start(t, yamlf(`
listeners:
  - {name: l, address: "%s", protocol: http, cluster: c}
  - {name: m, address: "%s", protocol: http, cluster: checked}
clusters:
  - {name: c, endpoints: ["%s", "%s"], outlier_detection: {consecutive_5xx: 3, base_ejection_time: 1m}}
  - {name: checked, endpoints: ["%s", "%s"], health_check: {type: http, path: /healthz, interval: 500ms, expect_status: ["200-299"]}}
`, testenv.FreePort(t), testenv.FreePort(t), bad.addr, good.addr, sick.addr, good.addr), nil)
	c := &http.Client{}
	for i := 0; i < 6; i++ {
		httpGet(t, c, "http://"+h.addr("l")+"/", nil)
	}
	for i := 0; i < 10; i++ {
		if resp, _ := httpGet(t, c, "http://"+h.addr("l")+"/", nil); resp.StatusCode != 200 {
			t.Fatalf("after ejection request %d got %d; the 5xx endpoint is still used", i, resp.StatusCode)
		}
	}
	h.waitReady()
	for i := 0; i < 10; i++ {
		if resp, _ := httpGet(t, c, "http://"+h.addr("m")+"/", nil); resp.Header.Get("X-Backend") != "good" {
			t.Fatalf("request %d went to %s, which fails its health check", i, resp.Header.Get("X-Backend"))
		}
	}
}

func TestHTTP2AndH2C(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", true)
	h := start(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", protocol: http, cluster: c}]
clusters: [{name: c, endpoints: ["%s"], http: {version: h2c}}]
`, b.addr), nil)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	resp, body := httpGet(t, &http.Client{Transport: tr}, "http://"+h.addr("l")+"/h2", nil)
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Errorf("app side: got %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}
	if got := b.proto.Load(); got != "HTTP/2.0" {
		t.Errorf("upstream side: got %v, want HTTP/2.0 (h2c)", got)
	}
	if !strings.HasPrefix(body, "b GET /h2") {
		t.Errorf("body %q", body)
	}
}

// TestWebSocket passes an Upgrade through and then bytes both ways.
func TestWebSocket(t *testing.T) {
	t.Parallel()
	ws := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want websocket", 400)
			return
		}
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		conn, rw, _ := http.NewResponseController(w).Hijack()
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(sum[:]))
		rw.Flush()
		buf := make([]byte, 64)
		for {
			n, err := rw.Read(buf)
			if err != nil {
				return
			}
			conn.Write([]byte("echo:" + string(buf[:n])))
		}
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go ws.Serve(ln)
	t.Cleanup(func() { ws.Close() })
	h := start(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", protocol: http, cluster: ws}]
clusters: [{name: ws, endpoints: ["%s"]}]
`, ln.Addr()), nil)
	conn, err := net.Dial("tcp", h.addr("l"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if got := resp.Header.Get("Sec-Websocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("accept key: %q", got)
	}
	for _, msg := range []string{"hello", "again"} {
		conn.Write([]byte(msg))
		buf := make([]byte, 64)
		n, err := br.Read(buf)
		if err != nil || string(buf[:n]) != "echo:"+msg {
			t.Fatalf("through the upgraded connection: got %q, %v", buf[:n], err)
		}
	}
}

func TestHTTPLoopbackHostBecomesUpstreamHost(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", false)
	_, port, _ := net.SplitHostPort(b.addr)
	h := start(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", protocol: http, cluster: c}]
clusters: [{name: c, endpoints: ["localhost:%s"]}]
`, port), nil)
	_, body := httpGet(t, &http.Client{}, "http://"+h.addr("l")+"/", nil)
	if !strings.HasSuffix(body, "host=localhost:"+port) {
		t.Errorf("got %q, want the endpoint's host sent upstream", body)
	}
}

// TestHTTPOverTLSListener: h2 by ALPN from the app to a TLS listener, and a
// JSON access log line per request.
func TestHTTPOverTLSListener(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", false)
	dir := t.TempDir()
	ca := testenv.NewCA(t, "ca")
	caFile, crt, key := ca.Files(t, dir, "127.0.0.1")
	logs := &testenv.LogBuffer{}
	file := filepath.Join(t.TempDir(), "a.yaml")
	os.WriteFile(file, []byte(yamlf(`
admin: {address: "127.0.0.1:0"}
drain_timeout: 1s
listeners:
  - {name: l, address: "127.0.0.1:0", protocol: http, cluster: c, access_log: json,
     tls: {cert_file: "%s", key_file: "%s"}}
clusters: [{name: c, endpoints: ["%s"]}]
`, crt, key, b.addr)), 0o644)
	a, err := New(Options{ConfigPath: file, LogOutput: io.Discard, AccessLogOutput: logs})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	roots := x509.NewCertPool()
	pem, _ := os.ReadFile(caFile)
	roots.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	resp, body := httpGet(t, &http.Client{Transport: tr}, "https://"+a.ListenerAddr("l")+"/secure", nil)
	if resp.ProtoMajor != 2 || !strings.HasPrefix(body, "b GET /secure") {
		t.Errorf("got %s %q, want HTTP/2 by ALPN", resp.Proto, body)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(logs.String(), "\n", 2)[0]), &line); err != nil {
		t.Fatalf("access log %q: %v", logs.String(), err)
	}
	for k, want := range map[string]any{"route": "l/0", "cluster": "c", "endpoint": b.addr, "status": float64(200), "attempts": float64(1), "path": "/secure"} {
		if line[k] != want {
			t.Errorf("access log %s: got %v, want %v", k, line[k], want)
		}
	}
}

// TestHTTPDrainClosesIdleKeepAlive: at shutdown an idle HTTP/1.1 keep-alive
// connection of the app is closed, so attache exits without waiting out
// drain_timeout.
func TestHTTPDrainClosesIdleKeepAlive(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", false)
	cfg, err := config.Parse([]byte(yamlf(`
admin: {address: "127.0.0.1:0"}
drain_timeout: 30s
drain_min: 0s
listeners: [{name: l, address: "127.0.0.1:0", protocol: http, cluster: c}]
clusters: [{name: c, endpoints: ["%s"]}]
`, b.addr)), nil, protocols.Schemas())
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Config: cfg, LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	httpGet(t, client, "http://"+a.ListenerAddr("l")+"/", nil) // leaves an idle keep-alive connection
	began := time.Now()
	a.Shutdown(context.Background())
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("shutdown took %v with only an idle keep-alive connection open", d)
	}
}
