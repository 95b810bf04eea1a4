package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"

	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/upstream"
)

// proxyEnv is a listener of one route to one cluster, served by a Server
// on a loopback port.
type proxyEnv struct {
	addr    string
	srv     *Server
	cluster *Cluster
}

func newProxy(t testing.TB, fast bool, endpoints []string, route Route) *proxyEnv {
	return newProxyLog(t, fast, endpoints, route, nil)
}

func newProxyLog(t testing.TB, fast bool, endpoints []string, route Route, access *slog.Logger) *proxyEnv {
	t.Helper()
	return newProxyIdle(t, fast, endpoints, route, access, time.Minute)
}

// newProxyIdle is newProxyLog with the listener's idle timeout.
func newProxyIdle(t testing.TB, fast bool, endpoints []string, route Route, access *slog.Logger, idle time.Duration) *proxyEnv {
	t.Helper()
	return newProxySetup(t, fast, endpoints, route, access, idle, nil)
}

// newProxySetup is newProxyIdle with setup, if not nil, run on the Server
// before its first connection.
func newProxySetup(t testing.TB, fast bool, endpoints []string, route Route, access *slog.Logger, idle time.Duration, setup func(*Server)) *proxyEnv {
	t.Helper()
	picker, err := balance.New("first")
	if err != nil {
		t.Fatal(err)
	}
	up := upstream.New(upstream.Options{Name: "c", Picker: picker, ConnectTimeout: time.Second,
		Outlier: upstream.OutlierPolicy{ConsecutiveFailures: 100}})
	var targets []upstream.Target
	for _, e := range endpoints {
		targets = append(targets, upstream.Target{Addr: e, Weight: 1})
	}
	up.SetEndpoints(targets)
	c := NewCluster(ClusterParams{Upstream: up, Version: "auto", MaxIdle: 64, IdleTimeout: time.Minute, ConnectTimeout: time.Second})
	if route.Match.Path == "" && route.Match.Prefix == "" {
		route.Match.Prefix = "/"
	}
	route.Name = "l/0"
	route.To = []RouteTarget{{Cluster: "c", Weight: 1}}
	if route.Timeout == 0 {
		route.Timeout = config.Duration(5 * time.Second)
	}
	log := slog.New(slog.DiscardHandler)
	table := NewTable(listenerOf("l", route), func(string) *Cluster { return c })
	path := onNetHTTP
	if fast {
		path = fastPathOf(t)
	}
	s := newTestServer(t, idle, path, log)
	if setup != nil {
		setup(s)
	}
	s.Update(NewHandler(HandlerOptions{Table: table, Log: log, AccessLog: access}))
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

// echoBackend answers with what it saw: method, path, framing and body.
type echoBackend struct {
	addr  string
	conns atomic.Int64 // connections accepted
	srv   *http.Server
}

func newEcho(t testing.TB) *echoBackend {
	t.Helper()
	b := &echoBackend{}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Path", r.URL.RequestURI())
		w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Length", fmt.Sprint(r.ContentLength))
		w.Header().Set("X-Expect", r.Header.Get("Expect"))
		w.Header().Set("X-XFF", r.Header.Get("X-Forwarded-For"))
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part1,"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2:" + string(body)))
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.WriteHeader(304)
		default:
			fmt.Fprintf(w, "echo:%s", body)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.srv = &http.Server{Handler: mux, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	b.addr = ln.Addr().String()
	return b
}

// raw sends bytes on a new connection and returns the connection and a
// reader of what comes back.
func raw(t *testing.T, addr, data string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, data); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(body)
}

// closed reports whether the server closed c (after what was read).
func closed(br *bufio.Reader) bool {
	_, err := br.ReadByte()
	return err == io.EOF
}

// TestFastSmuggling: ambiguous or malformed framing is a 400 and the end
// of that connection, before anything reaches the upstream; other clients
// are unaffected.
func TestFastSmuggling(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	for _, tc := range []struct{ name, req string }{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"},
		{"other TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd"},
		{"differing CLs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"},
		{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd"},
		{"signed CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd"},
		{"hex CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\nabcd"},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"repeated TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 4\r\n\r\nabcd"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n"},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
		{"no Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
		{"chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000004\r\nabcd\r\n0\r\n\r\n"},
		{"chunk without CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdXX0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, br := raw(t, p.addr, tc.req)
			resp, _ := readResp(t, br, "GET")
			if resp.StatusCode != 400 {
				t.Errorf("got %d, want 400", resp.StatusCode)
			}
			if !closed(br) {
				t.Error("connection left open after a malformed request")
			}
		})
	}
	// Identical duplicate Content-Lengths are one length (as net/http).
	_, br := raw(t, p.addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi")
	if resp, body := readResp(t, br, "POST"); resp.StatusCode != 200 || body != "echo:hi" {
		t.Errorf("duplicate equal Content-Length: got %d %q", resp.StatusCode, body)
	}
}

// TestFastChunkedBothWays: a chunked request body arrives re-chunked and
// whole; a chunked (flushed) response reaches the app chunked, and decoded
// for an HTTP/1.0 app, which then sees the connection close.
func TestFastChunkedBothWays(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	_, br := raw(t, p.addr, "POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n")
	resp, body := readResp(t, br, "POST")
	if resp.StatusCode != 200 || body != "part1,part2:abcdefg" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-TE") != "chunked" {
		t.Errorf("upstream saw Transfer-Encoding %q, want chunked", resp.Header.Get("X-TE"))
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("app got Transfer-Encoding %v, want chunked", resp.TransferEncoding)
	}
	_, br = raw(t, p.addr, "GET /chunked HTTP/1.0\r\n\r\n")
	resp, body = readResp(t, br, "GET")
	if resp.StatusCode != 200 || body != "part1,part2:" || len(resp.TransferEncoding) != 0 || !resp.Close {
		t.Errorf("HTTP/1.0: got %d %q TE=%v close=%v", resp.StatusCode, body, resp.TransferEncoding, resp.Close)
	}
}

// TestFastPipelined: requests sent back to back on one connection are
// answered in order.
func TestFastPipelined(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	var reqs strings.Builder
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&reqs, "POST /p%d HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n%02d", i, i)
	}
	reqs.WriteString("GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	_, br := raw(t, p.addr, reqs.String())
	for i := 0; i < 5; i++ {
		resp, body := readResp(t, br, "POST")
		if want := fmt.Sprintf("echo:%02d", i); body != want || resp.Header.Get("X-Path") != fmt.Sprintf("/p%d", i) {
			t.Errorf("response %d: %q for %s, want %q", i, body, resp.Header.Get("X-Path"), want)
		}
	}
	resp, _ := readResp(t, br, "GET")
	if !resp.Close || !closed(br) {
		t.Error("Connection: close did not close")
	}
}

// TestFast100Continue: the app's Expect: 100-continue is answered when
// its body is wanted; the upstream gets the body without the Expect.
func TestFast100Continue(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	c, br := raw(t, p.addr, "PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q %v, want 100 Continue", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "hello")
	resp, body := readResp(t, br, "PUT")
	if resp.StatusCode != 200 || body != "echo:hello" || resp.Header.Get("X-Expect") != "" {
		t.Errorf("got %d %q expect-upstream=%q", resp.StatusCode, body, resp.Header.Get("X-Expect"))
	}
	// Refused before the body was asked for: no 100, and the connection
	// closes after the answer (the body may or may not follow).
	p2 := newProxy(t, true, []string{b.addr}, Route{Match: RouteMatch{Path: "/only"}})
	_, br = raw(t, p2.addr, "PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	resp, _ = readResp(t, br, "PUT")
	if resp.StatusCode != 404 || !closed(br) {
		t.Errorf("got %d, want 404 and the connection closed", resp.StatusCode)
	}
}

// TestFastNoBodyResponses: HEAD, 204 and 304 carry no body, and the
// connection goes on.
func TestFastNoBodyResponses(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	_, br := raw(t, p.addr, "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\n\r\nGET /end HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []struct {
		method string
		code   int
	}{{"HEAD", 200}, {"GET", 204}, {"GET", 304}} {
		resp, body := readResp(t, br, want.method)
		if resp.StatusCode != want.code || body != "" {
			t.Errorf("%s: got %d %q", want.method, resp.StatusCode, body)
		}
	}
	if resp, body := readResp(t, br, "GET"); body != "echo:" {
		t.Errorf("after the bodiless responses: %d %q", resp.StatusCode, body)
	}
}

// TestFastHandOff: h2c with prior knowledge, and an Upgrade after a fast
// request on the same connection, go to net/http with what was read.
func TestFastHandOff(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("http://"+p.addr+"/h2", "text/plain", strings.NewReader("over h2c"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "echo:over h2c" {
		t.Errorf("h2c: got %s %q", resp.Proto, body)
	}

	// A WebSocket-style upgrade after a plain request: the echo backend
	// refuses upgrades, so net/http's ReverseProxy relays its answer.
	_, br := raw(t, p.addr, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, path := range []string{"/a", "/b", "/c"} {
		resp, _ := readResp(t, br, "GET")
		if resp.Header.Get("X-Path") != path {
			t.Errorf("got %d for %s, want %s", resp.StatusCode, resp.Header.Get("X-Path"), path)
		}
	}
}

// TestFastUpstreamReuse: sequential requests share one upstream
// connection; the upstream closing it while idle is invisible to a GET
// (retried at once on a new connection, still one attempt).
func TestFastUpstreamReuse(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	c := &http.Client{}
	get := func() *http.Response {
		resp, err := c.Get("http://" + p.addr + "/r")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := 0; i < 50; i++ {
		get()
	}
	if n := b.conns.Load(); n != 1 {
		t.Errorf("50 sequential requests used %d upstream connections, want 1", n)
	}
}

// TestFastStaleUpstreamRetried: an upstream that closes a kept-alive
// connection while it is idle (its idle timeout) is invisible to a GET:
// sent again at once on a new connection, still one attempt.
func TestFastStaleUpstreamRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() { // one response per connection, then an idle close
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	p := newProxy(t, true, []string{ln.Addr().String()}, Route{})
	for i := 0; i < 3; i++ {
		resp, err := http.Get("http://" + p.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Attache-Attempts") != "1" {
			t.Errorf("request %d: %d attempts=%s, want 200 in one attempt", i, resp.StatusCode, resp.Header.Get("X-Attache-Attempts"))
		}
		for j := 0; j < 200 && !upstreamConnClosed(p); j++ {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if n := accepted.Load(); n != 3 {
		t.Errorf("upstream connections: %d, want 3", n)
	}
}

// upstreamConnClosed reports whether the pooled connection has seen the
// upstream's close.
func upstreamConnClosed(p *proxyEnv) bool {
	p.cluster.mu.Lock()
	defer p.cluster.mu.Unlock()
	for _, pool := range p.cluster.pools {
		pool.mu.Lock()
		defer pool.mu.Unlock()
		for _, uc := range pool.conns {
			uc.c.SetReadDeadline(time.Now().Add(time.Millisecond))
			_, err := uc.br.Peek(1)
			uc.c.SetReadDeadline(time.Time{})
			if err == io.EOF {
				// Leave it in the pool: the next request must cope.
				uc.br.Reset(uc.c)
				return true
			}
		}
	}
	return false
}

// TestFastHeadersAndForwarding: hop-by-hop headers (and those the
// Connection header names) are stripped both ways, X-Forwarded-For is
// the app's address (TestForwardedForPolicy).
func TestFastHeadersAndForwarding(t *testing.T) {
	var got atomic.Value
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Clone())
		w.Header().Set("Connection", "X-Up-Hop")
		w.Header().Set("X-Up-Hop", "no")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "yes")
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go up.Serve(ln)
	defer up.Close()
	p := newProxy(t, true, []string{ln.Addr().String()}, Route{})
	_, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: no\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nX-Forwarded-For: 10.0.0.1\r\nX-Keep: yes\r\n\r\n")
	resp, _ := readResp(t, br, "GET")
	h := got.Load().(http.Header)
	for k, want := range map[string]string{"X-Hop": "", "Keep-Alive": "", "Proxy-Connection": "", "Connection": "", "X-Keep": "yes",
		"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "a"} {
		if h.Get(k) != want {
			t.Errorf("upstream %s: %q, want %q", k, h.Get(k), want)
		}
	}
	for k, want := range map[string]string{"X-Up-Hop": "", "Keep-Alive": "", "X-Kept": "yes", "X-Attache-Attempts": "1"} {
		if resp.Header.Get(k) != want {
			t.Errorf("response %s: %q, want %q", k, resp.Header.Get(k), want)
		}
	}
}

// rawBackend answers every request with the same small response, without
// allocating, so that AllocsPerRun counts attache's allocations.
func rawBackend(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\nhello, attache\n")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 8192)
				n := 0
				for {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					for {
						i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						c.Write(resp)
						n = copy(buf, buf[i+4:n])
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// fastClient sends one request and reads its response over a kept
// connection, without allocating.
type fastClient struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
}

func (fc *fastClient) do() error {
	if _, err := fc.c.Write(fc.req); err != nil {
		return err
	}
	n, _, err := readHead(fc.br, nil)
	if err != nil {
		return err
	}
	head, _ := fc.br.Peek(n)
	i := bytes.Index(head, []byte("Content-Length: "))
	j := bytes.IndexByte(head[i:], '\r')
	length, _ := parseLength(head[i+16 : i+j])
	_, err = fc.br.Discard(n + 2 + int(length))
	return err
}

func newFastClient(t testing.TB, addr string) *fastClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &fastClient{c: c, br: bufio.NewReader(c),
		req: []byte("GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")}
}

// TestFastAllocs: a small GET through the fast path allocates only the
// head's one string.
func TestFastAllocs(t *testing.T) {
	p := newProxy(t, true, []string{rawBackend(t)}, Route{})
	fc := newFastClient(t, p.addr)
	for i := 0; i < 10; i++ {
		if err := fc.do(); err != nil {
			t.Fatal(err)
		}
	}
	// AllocsPerRun counts the whole process: goroutines other tests left
	// behind (timers, refreshers winding down) allocate now and then. The
	// least of three runs is the path's own count.
	allocs := math.Inf(1)
	for range 3 {
		allocs = min(allocs, testing.AllocsPerRun(1000, func() {
			if err := fc.do(); err != nil {
				t.Fatal(err)
			}
		}))
	}
	t.Logf("%.1f allocations per request", allocs)
	limit := 2.0 // 1: the head's string
	if fastPathOf(t) == onEngine {
		limit = 0.5 // the engine parses in place
	}
	if allocs > limit {
		t.Errorf("%.1f allocations per request, want at most %.1f", allocs, limit)
	}
}

// BenchmarkProxy: small GETs over loopback through the fast path and
// through net/http (ReverseProxy), for -benchmem and pprof.
func BenchmarkProxy(b *testing.B) {
	for _, fast := range []bool{true, false} {
		name := "fast"
		if !fast {
			name = "nethttp"
		}
		b.Run(name, func(b *testing.B) {
			p := newProxy(b, fast, []string{rawBackend(b)}, Route{})
			fc := newFastClient(b, p.addr)
			b.ReportAllocs()
			for b.Loop() {
				if err := fc.do(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestFastAccessLog: the fast path's access log line has the request's
// fields, with the request ID attache made and sent upstream.
func TestFastAccessLog(t *testing.T) {
	b := newEcho(t)
	buf := &lockedBuffer{}
	p := newProxyLog(t, true, []string{b.addr}, Route{}, slog.New(slog.NewJSONHandler(buf, nil)))
	_, br := raw(t, p.addr, "GET /logged?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	readResp(t, br, "GET")
	closed(br) // the line is written before the connection closes
	var line map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &line); err != nil {
		t.Fatalf("access log %q: %v", buf.String(), err)
	}
	for k, want := range map[string]any{"method": "GET", "path": "/logged", "route": "l/0", "cluster": "c", "endpoint": b.addr,
		"status": float64(200), "attempts": float64(1)} {
		if line[k] != want {
			t.Errorf("access log %s: got %v, want %v", k, line[k], want)
		}
	}
	if id, _ := line["request_id"].(string); len(id) != 32 {
		t.Errorf("request_id %q, want the 32 hex digits made for the request", id)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFastLargeBodies: large bodies both ways arrive whole (the response's
// first part leaves with its head in one write).
func TestFastLargeBodies(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 KB
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !bytes.Equal(body, big[:len(body)]) {
			w.WriteHeader(400)
			return
		}
		n := len(big) - len(body)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		w.Write(big[:n])
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go up.Serve(ln)
	defer up.Close()
	p := newProxy(t, true, []string{ln.Addr().String()}, Route{})
	for _, sent := range []int{0, 5000, 20000, 300000} {
		resp, err := http.Post("http://"+p.addr+"/", "application/octet-stream", bytes.NewReader(big[:sent]))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, big[:len(big)-sent]) {
			t.Errorf("sent %d: status %d, got %d bytes (%v), want %d intact", sent, resp.StatusCode, len(got), err, len(big)-sent)
		}
	}
}
