package httpproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// requestPaths are the ways a request goes through attache: the event-loop
// engine, the goroutine fast path, and net/http.
var requestPaths = []struct {
	name string
	path wirePath
}{{"engine", onEngine}, {"goroutine", onGoroutine}, {"net_http", onNetHTTP}}

// configLimits are the thresholds a circuit_breaker block gives when it
// sets only what set does (the defaults of internal/config for the rest).
func configLimits(set Limits) Limits {
	l := Limits{MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024, MaxRetries: 3}
	if set.MaxConnections > 0 {
		l.MaxConnections = set.MaxConnections
	}
	if set.MaxPending > 0 {
		l.MaxPending = set.MaxPending
	}
	if set.MaxRequests > 0 {
		l.MaxRequests = set.MaxRequests
	}
	if set.MaxRetries > 0 {
		l.MaxRetries = set.MaxRetries
	}
	return l
}

// newPathProxy is a listener served on path, of one route to a cluster of
// endpoints balanced by picker, with limits lim.
func newPathProxy(t testing.TB, path wirePath, endpoints []string, route Route, picker string, lim Limits) *proxyEnv {
	t.Helper()
	return newVersionProxy(t, path, endpoints, route, picker, lim, "auto")
}

// newVersionProxy is newPathProxy with the cluster's HTTP version.
func newVersionProxy(t testing.TB, path wirePath, endpoints []string, route Route, picker string, lim Limits, version string) *proxyEnv {
	t.Helper()
	pk, err := balance.New(picker)
	if err != nil {
		t.Fatal(err)
	}
	up := upstream.New(upstream.Options{Name: "c", Picker: pk, ConnectTimeout: time.Second,
		Outlier: upstream.OutlierPolicy{ConsecutiveFailures: 100}})
	var targets []upstream.Target
	for _, e := range endpoints {
		targets = append(targets, upstream.Target{Addr: e, Weight: 1})
	}
	up.SetEndpoints(targets)
	c := NewCluster(ClusterParams{Upstream: up, Version: version, MaxIdle: 64, IdleTimeout: time.Minute,
		ConnectTimeout: time.Second, Limits: lim})
	route.Match.Prefix = "/"
	route.Name = "l/0"
	route.To = []RouteTarget{{Cluster: "c", Weight: 1}}
	if route.Timeout == 0 {
		route.Timeout = config.Duration(30 * time.Second)
	}
	log := slog.New(slog.DiscardHandler)
	table := NewTable(listenerOf("l", route), func(string) *Cluster { return c })
	s := newTestServer(t, time.Minute, path, log)
	s.Update(NewHandler(HandlerOptions{Table: table, Log: log}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go s.ServeConn(context.Background(), conn)
		}
	}()
	t.Cleanup(func() { ln.Close(); s.Close(time.Second); c.Close() })
	return &proxyEnv{addr: ln.Addr().String(), srv: s, cluster: c}
}

// gateBackend holds requests to /block until released, counting them in
// flight and the most at once; /fail is a 503; anything else a 200.
type gateBackend struct {
	addr     string
	inflight atomic.Int64
	most     atomic.Int64
	release  chan struct{}
	once     sync.Once
}

func newGateBackend(t *testing.T) *gateBackend {
	t.Helper()
	b := &gateBackend{release: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/block":
			n := b.inflight.Add(1)
			for m := b.most.Load(); n > m && !b.most.CompareAndSwap(m, n); m = b.most.Load() {
			}
			<-b.release
			b.inflight.Add(-1)
			io.WriteString(w, "released")
		case "/fail":
			http.Error(w, "backend failure", http.StatusServiceUnavailable)
		default:
			io.WriteString(w, "ok")
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { b.open(); srv.Close() })
	b.addr = ln.Addr().String()
	return b
}

// open releases every held request, and those to come.
func (b *gateBackend) open() { b.once.Do(func() { close(b.release) }) }

// waitFor polls cond every 5 ms for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// answer is what a client got.
type answer struct {
	status     int
	overloaded string
	reason     string
	attempts   string
	body       string
	err        error
}

func (a answer) String() string {
	return fmt.Sprintf("%d overloaded=%q reason=%q attempts=%s body=%q err=%v", a.status, a.overloaded, a.reason, a.attempts, a.body, a.err)
}

// get sends one GET on a connection of its own.
func get(addr, path string) answer {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, overloaded: resp.Header.Get("X-Attache-Overloaded"),
		reason: resp.Header.Get("X-Attache-Reason"), attempts: resp.Header.Get("X-Attache-Attempts"),
		body: strings.TrimSpace(string(body)), err: err}
}

// async sends a GET in the background; its answer comes on the channel.
func async(addr, path string) <-chan answer {
	ch := make(chan answer, 1)
	go func() { ch <- get(addr, path) }()
	return ch
}

// TestLimitsAlone: each connection threshold, set alone (the others at
// their defaults), is enforced on every request path: max_connections
// holds what is over it pending (the backend never sees more at once),
// max_pending refuses what is over both, max_requests refuses what is
// over it; refusals are 503 with x-attache-overloaded: true.
func TestLimitsAlone(t *testing.T) {
	cases := []struct {
		name      string
		set       Limits
		atBackend int64 // requests the backend holds at once
		queued    int64 // requests waiting in attache
		refused   bool  // one more request is refused
	}{
		{"max_connections", Limits{MaxConnections: 2}, 2, 2, false},
		{"max_pending", Limits{MaxConnections: 2, MaxPending: 1}, 2, 1, true},
		{"max_requests", Limits{MaxRequests: 2}, 2, 0, true},
	}
	for _, p := range requestPaths {
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				b := newGateBackend(t)
				px := newPathProxy(t, p.path, []string{b.addr}, Route{}, "first", configLimits(tc.set))
				var held []<-chan answer
				for range tc.atBackend {
					held = append(held, async(px.addr, "/block"))
				}
				waitFor(t, "requests at the backend", func() bool { return b.inflight.Load() == tc.atBackend })
				for range tc.queued {
					held = append(held, async(px.addr, "/block"))
				}
				waitFor(t, "requests queued", func() bool { return px.cluster.slots.waiting.Load() == tc.queued })
				if tc.refused {
					a := get(px.addr, "/other")
					if a.status != http.StatusServiceUnavailable || a.overloaded != "true" || a.reason != "overloaded" {
						t.Errorf("request over the limit: got %v, want 503 overloaded", a)
					}
				}
				if got := b.inflight.Load(); got != tc.atBackend {
					t.Errorf("requests at the backend: got %d, want %d", got, tc.atBackend)
				}
				b.open()
				for i, ch := range held {
					if a := <-ch; a.status != http.StatusOK || a.body != "released" {
						t.Errorf("held request %d: got %v, want 200 released", i, a)
					}
				}
				if got := b.most.Load(); got != tc.atBackend {
					t.Errorf("most requests at the backend at once: got %d, want %d", got, tc.atBackend)
				}
				if a := get(px.addr, "/after"); a.status != http.StatusOK {
					t.Errorf("request after: got %v, want 200", a)
				}
			})
		}
	}
}

// TestRetryLimitsAlone: max_retries alone, and the retry budget alone,
// stop a retry once as many retries as they allow are in flight: the
// failing request over them gets the backend's own 503 after one attempt,
// where without them it would have been retried.
func TestRetryLimitsAlone(t *testing.T) {
	retries := func(budget int) Route {
		return Route{Retries: &Retries{Attempts: 2, On: []string{"5xx"}, BudgetPercent: budget, MaxBuffer: 64 << 10,
			// Long enough that the retrying requests are still waiting
			// when the last one fails.
			Backoff: Backoff{Base: config.Duration(time.Hour), Max: config.Duration(time.Hour)}}}
	}
	cases := []struct {
		name     string
		route    Route
		lim      Limits
		retrying int64 // retries in flight the limit allows
	}{
		{"max_retries", retries(100), configLimits(Limits{MaxRetries: 1}), 1},
		{"budget_percent", retries(1), Limits{}, 3}, // the floor of 3: 1% of 4 requests in flight
	}
	for _, p := range requestPaths {
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				b := newGateBackend(t)
				route := tc.route
				route.Timeout = config.Duration(20 * time.Second)
				px := newPathProxy(t, p.path, []string{b.addr}, route, "first", tc.lim)
				for range tc.retrying {
					async(px.addr, "/fail") // answered when the test ends
				}
				waitFor(t, "retries in flight", func() bool { return px.cluster.retrying.Load() == tc.retrying })
				a := get(px.addr, "/fail")
				if a.status != http.StatusServiceUnavailable || a.attempts != "1" || a.body != "backend failure" || a.overloaded != "" {
					t.Errorf("failing request over the limit: got %v, want the backend's 503 after 1 attempt", a)
				}
				if got := px.cluster.retrying.Load(); got != tc.retrying {
					t.Errorf("retries in flight: got %d, want %d", got, tc.retrying)
				}
			})
		}
	}
}

// TestGracefulShutdownLosesNothing: one of two backends shut down
// gracefully (http.Server.Shutdown: its listener closed, idle connections
// closed, those in flight finished) and later started again on its
// address, under a load of GETs and POSTs, costs no GET: refused connects are redispatched at once, outside the retry
// budget and max_retries, and GETs on pooled connections it closed are
// sent again. No POST is sent twice: the backends counted as many as were
// acknowledged, and a POST that failed got attache's own 502 or 503.
func TestGracefulShutdownLosesNothing(t *testing.T) {
	const workers, total, stopAt, restartAt = 16, 3000, 600, 1800
	for _, p := range requestPaths {
		t.Run(p.name, func(t *testing.T) {
			var posts atomic.Int64 // POSTs the backends received
			var srvs [2]*http.Server
			var addrs []string
			for i := range srvs {
				srvs[i] = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					if r.Method == http.MethodPost {
						posts.Add(1)
					}
					io.WriteString(w, "ok")
				})}
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				go srvs[i].Serve(ln)
				t.Cleanup(func() { srvs[i].Close() })
				addrs = append(addrs, ln.Addr().String())
			}
			route := Route{Retries: &Retries{Attempts: 3, On: []string{"5xx", "connect_failure", "reset"}, BudgetPercent: 20,
				MaxBuffer: 64 << 10, Backoff: Backoff{Base: config.Duration(25 * time.Millisecond), Max: config.Duration(250 * time.Millisecond)}}}
			px := newPathProxy(t, p.path, addrs, route, "round_robin", configLimits(Limits{}))

			var sent, getFailed, postAcked, postFailed atomic.Int64
			var failures sync.Map // what failed, for the message
			stopped := make(chan error, 1)
			restarted := make(chan *http.Server, 1) // on the same address
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
					defer c.CloseIdleConnections()
					for i := 0; ; i++ {
						n := sent.Add(1)
						if n > total {
							return
						}
						if n == stopAt {
							go func() {
								ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
								defer cancel()
								stopped <- srvs[0].Shutdown(ctx)
								for sent.Load() < restartAt {
									time.Sleep(time.Millisecond)
								}
								ln, err := net.Listen("tcp", addrs[0])
								if err != nil {
									restarted <- nil
									return
								}
								srv := &http.Server{Handler: srvs[0].Handler}
								go srv.Serve(ln)
								restarted <- srv
							}()
						}
						post := (w+i)%4 == 0
						var resp *http.Response
						var err error
						if post {
							resp, err = c.Post("http://"+px.addr+"/p", "text/plain", strings.NewReader("write"))
						} else {
							resp, err = c.Get("http://" + px.addr + "/g")
						}
						a := answer{err: err}
						if err == nil {
							body, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							a.status, a.reason, a.body = resp.StatusCode, resp.Header.Get("X-Attache-Reason"), string(body)
						}
						switch {
						case a.status == http.StatusOK && a.body == "ok" && post:
							postAcked.Add(1)
						case a.status == http.StatusOK && a.body == "ok":
						case post:
							postFailed.Add(1)
							failures.Store("POST "+a.String(), true)
						default:
							getFailed.Add(1)
							failures.Store("GET "+a.String(), true)
						}
					}
				}()
			}
			wg.Wait()
			if err := <-stopped; err != nil {
				t.Errorf("shutdown: %v", err)
			}
			if srv := <-restarted; srv == nil {
				t.Errorf("the backend could not listen again on %s", addrs[0])
			} else {
				srv.Close()
			}
			failures.Range(func(k, _ any) bool {
				if s := k.(string); strings.HasPrefix(s, "GET") || !strings.HasPrefix(s, "POST 502") && !strings.HasPrefix(s, "POST 503") {
					t.Errorf("failed: %s", s)
				}
				return true
			})
			if n := getFailed.Load(); n != 0 {
				t.Errorf("GETs failed: got %d, want 0", n)
			}
			if got, want := posts.Load(), postAcked.Load(); got != want {
				t.Errorf("POSTs the backends received: got %d, want %d (acknowledged; %d failed)", got, want, postFailed.Load())
			}
			t.Logf("POSTs acknowledged %d, failed %d", postAcked.Load(), postFailed.Load())
		})
	}
}

// TestRefusedConnectRedispatched: with one of two endpoints refusing and
// no retries configured, every request reaches the other one, a POST
// with a body too large to buffer too (nothing of it was sent), on every
// path and over HTTP/1.1 and h2c upstreams; the refused try shows in
// x-attache-attempts.
func TestRefusedConnectRedispatched(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	body := strings.Repeat("b", 200<<10)
	cases := []struct {
		name    string
		path    wirePath
		version string
	}{
		{"engine", onEngine, "auto"},
		{"goroutine", onGoroutine, "auto"},
		{"net_http", onNetHTTP, "auto"},
		{"net_http_h2c", onNetHTTP, "h2c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := &http.Server{Protocols: new(http.Protocols), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "echo:%s", got)
			})}
			srv.Protocols.SetHTTP1(true)
			srv.Protocols.SetUnencryptedHTTP2(true)
			bl, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(bl)
			t.Cleanup(func() { srv.Close() })
			px := newVersionProxy(t, tc.path, []string{refused, bl.Addr().String()}, Route{}, "round_robin", Limits{}, tc.version)
			c := &http.Client{}
			defer c.CloseIdleConnections()
			redispatched := 0
			for i := range 8 {
				want := "echo:"
				var resp *http.Response
				var err error
				if i%2 == 0 {
					resp, err = c.Get("http://" + px.addr + "/g")
				} else {
					want += body
					resp, err = c.Post("http://"+px.addr+"/p", "text/plain", strings.NewReader(body))
				}
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || string(got) != want {
					t.Fatalf("request %d: got %d, %d bytes (%v), reason %q; want 200 and the echo", i, resp.StatusCode, len(got), err, resp.Header.Get("X-Attache-Reason"))
				}
				if resp.Header.Get("X-Attache-Attempts") == "2" {
					redispatched++
				}
			}
			if redispatched == 0 {
				t.Errorf("requests with 2 attempts: got 0, want some (round robin over a refusing endpoint)")
			}
		})
	}
}

// TestPooledCloseBeforeAnswer: a request sent on a pooled connection that
// the upstream closes before answering (it read the request, then closed)
// is sent again on a new connection, in one attempt and whatever the retry
// policy, when it is idempotent (RFC 9110: PUT and DELETE too) and its body
// can be sent again (none, or one buffered for retries: Go's Transport's
// rule); a POST is not sent twice: it fails with attache's 502 and the
// backend saw it once.
func TestPooledCloseBeforeAnswer(t *testing.T) {
	// Buffers bodies, but retries on nothing the stale connection gives.
	buffering := &Retries{Attempts: 2, On: []string{"connect_failure"}, BudgetPercent: 20, MaxBuffer: 64 << 10,
		Backoff: Backoff{Base: config.Duration(time.Millisecond), Max: config.Duration(time.Millisecond)}}
	cases := []struct {
		method  string
		body    string
		retries *Retries
		resent  bool
	}{
		{"GET", "", nil, true},
		{"DELETE", "", nil, true},
		{"PUT", "body", buffering, true},
		{"POST", "body", nil, false},
		{"POST", "body", buffering, false},
	}
	for _, p := range requestPaths {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%s/retries=%v", p.name, tc.method, tc.retries != nil), func(t *testing.T) {
				t.Parallel()
				var seen atomic.Int64                               // requests of tc.method the backend read
				backend := testenv.Serve(t, nil, func(c net.Conn) { // answers the first request, closes on the second
					defer c.Close()
					br := bufio.NewReader(c)
					for i := 0; ; i++ {
						r, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						io.Copy(io.Discard, r.Body)
						if r.Method == tc.method {
							seen.Add(1)
						}
						if i == 1 {
							return
						}
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					}
				})
				px := newPathProxy(t, p.path, []string{backend}, Route{Retries: tc.retries}, "first", Limits{})
				cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
				defer cl.CloseIdleConnections()
				do := func() answer {
					var sent io.Reader
					if tc.body != "" {
						sent = strings.NewReader(tc.body)
					}
					req, _ := http.NewRequest(tc.method, "http://"+px.addr+"/x", sent)
					resp, err := cl.Do(req)
					if err != nil {
						return answer{err: err}
					}
					defer resp.Body.Close()
					body, _ := io.ReadAll(resp.Body)
					return answer{status: resp.StatusCode, reason: resp.Header.Get("X-Attache-Reason"),
						attempts: resp.Header.Get("X-Attache-Attempts"), body: string(body)}
				}
				if a := do(); a.status != http.StatusOK || a.body != "ok" {
					t.Fatalf("first request: got %v, want 200 ok", a)
				}
				a := do() // on the pooled connection, which the backend closes
				switch {
				case tc.resent && (a.status != http.StatusOK || a.body != "ok" || a.attempts != "1"):
					t.Errorf("second request: got %v, want 200 ok in 1 attempt", a)
				case !tc.resent && a.status != http.StatusBadGateway:
					t.Errorf("second request: got %v, want attache's 502", a)
				}
				want := int64(2)
				if tc.resent {
					want = 3
				}
				if got := seen.Load(); got != want {
					t.Errorf("%s requests the backend read: got %d, want %d", tc.method, got, want)
				}
			})
		}
	}
}

// TestRedispatchDecision: afterTry redispatches a try that could not
// connect at once (no backoff), for any method and retry policy and past
// an exhausted budget and max_retries, until each endpoint was tried once;
// not a failure after the connection, not after the route timeout, not
// with one endpoint.
func TestRedispatchDecision(t *testing.T) {
	refused := &connectError{fmt.Errorf("dial tcp: %w", io.ErrUnexpectedEOF)}
	cases := []struct {
		name      string
		endpoints int
		errs      []error // the tries' errors, in turn
		idem      bool
		timedOut  bool
		want      []bool // redispatched after each
	}{
		{"refused, POST, no policy", 2, []error{refused}, false, false, []bool{true}},
		{"refused at each endpoint", 3, []error{refused, refused, refused}, true, false, []bool{true, true, false}},
		{"one endpoint", 1, []error{refused}, true, false, []bool{false}},
		{"reset after connecting", 2, []error{io.ErrUnexpectedEOF}, true, false, []bool{false}},
		{"route timed out", 2, []error{refused}, true, true, []bool{false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pk, _ := balance.New("round_robin")
			up := upstream.New(upstream.Options{Name: "c", Picker: pk, ConnectTimeout: time.Second})
			var ts []upstream.Target
			for i := range tc.endpoints {
				ts = append(ts, upstream.Target{Addr: fmt.Sprintf("127.0.0.1:%d", 1+i), Weight: 1})
			}
			up.SetEndpoints(ts)
			c := NewCluster(ClusterParams{Upstream: up, Limits: Limits{MaxRetries: 1}})
			c.retrying.Store(100) // budget and max_retries spent
			h := &Handler{}
			x := &exchange{route: &compiledRoute{}, cluster: c}
			x.timedOut.Store(tc.timedOut)
			var st tryState
			seen := map[*upstream.Endpoint]bool{}
			for i, err := range tc.errs {
				ep, nerr := h.nextTry(x, &st)
				if nerr != nil {
					t.Fatalf("try %d: %v", i+1, nerr)
				}
				if seen[ep] {
					t.Errorf("try %d: endpoint %s again, want another", i+1, ep.Addr)
				}
				seen[ep] = true
				retry, backoff, _ := h.afterTry(x, &st, ep, 0, err, false, 1, tc.idem, false)
				if got := retry && st.redispatch; got != tc.want[i] || got && backoff != 0 {
					t.Errorf("after try %d: redispatch %v (retry %v, backoff %v), want %v at once", i+1, got, retry, backoff, tc.want[i])
				}
				if !retry {
					break
				}
			}
		})
	}
}
