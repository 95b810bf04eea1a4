//go:build linux

package httpproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// engineOnly skips a test of the engine when the suite runs on the
// goroutine path.
func engineOnly(t *testing.T) {
	t.Helper()
	if fastPathOf(t) != onEngine {
		t.Skip("the engine is not under test")
	}
}

// engineConns is how many connections the engine holds, and how many
// the goroutine fast path.
func engineConns(p *proxyEnv) (engine, goroutine int) {
	p.srv.mu.Lock()
	goroutine = len(p.srv.conns)
	p.srv.mu.Unlock()
	return int(p.srv.eng.open.Load()), goroutine
}

// serveBackend answers every request on its connections with handle,
// which writes the raw response (false: close the connection).
func serveBackend(t *testing.T, handle func(c net.Conn, r *http.Request) bool) (addr string, requests *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	requests = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, r.Body)
					requests.Add(1)
					if !handle(c, r) {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), requests
}

// TestEngineServesPlainRequests: plain keep-alive requests stay in the
// engine (nothing on the goroutine path), pipelined ones too, past the
// engine's read buffer, answered in order.
func TestEngineServesPlainRequests(t *testing.T) {
	engineOnly(t)
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	var reqs strings.Builder
	const n = 300 // about 20 KiB: more than the read buffer holds
	for i := range n {
		if i%3 == 0 {
			fmt.Fprintf(&reqs, "POST /p%d HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n%03d", i, i)
		} else {
			fmt.Fprintf(&reqs, "GET /p%d HTTP/1.1\r\nHost: a\r\n\r\n", i)
		}
	}
	c, br := raw(t, p.addr, reqs.String())
	for i := range n {
		resp, body := readResp(t, br, "GET")
		want := "echo:"
		if i%3 == 0 {
			want += fmt.Sprintf("%03d", i)
		}
		if body != want || resp.Header.Get("X-Path") != fmt.Sprintf("/p%d", i) {
			t.Fatalf("response %d: %q for %s, want %q", i, body, resp.Header.Get("X-Path"), want)
		}
	}
	if e, g := engineConns(p); e != 1 || g != 0 {
		t.Errorf("connections: %d in the engine, %d on the goroutine path; want 1, 0", e, g)
	}
	c.Close()
}

// TestEngineHandOffWebSocket: a connection that made plain requests in
// the engine goes, at its Upgrade, to net/http with what was read, and a
// WebSocket-style exchange runs over it.
func TestEngineHandOffWebSocket(t *testing.T) {
	engineOnly(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			fmt.Fprintf(w, "plain %s", r.URL.Path)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw) // echo
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	p := newProxy(t, true, []string{ln.Addr().String()}, Route{})
	c, br := raw(t, p.addr, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, path := range []string{"/a", "/b"} {
		if _, body := readResp(t, br, "GET"); body != "plain "+path {
			t.Fatalf("got %q, want %q", body, "plain "+path)
		}
	}
	if e, g := engineConns(p); e != 1 || g != 0 {
		t.Errorf("before the upgrade: %d in the engine, %d on the goroutine path; want 1, 0", e, g)
	}
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v, want 101", resp, err)
	}
	io.WriteString(c, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo: %q %v, want ping", got, err)
	}
	io.WriteString(c, "pong")
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "pong" {
		t.Fatalf("echo: %q %v, want pong", got, err)
	}
	if e, _ := engineConns(p); e != 0 {
		t.Errorf("after the upgrade: %d in the engine, want 0", e)
	}
}

// TestEngineBackendResetMidResponse: an upstream reset after part of the
// body reaches the app cuts the app's connection (never a short body that
// looks whole); a POST reset before its response is answered 502 and not
// sent again; other connections are unaffected.
func TestEngineBackendResetMidResponse(t *testing.T) {
	addr, requests := serveBackend(t, func(c net.Conn, r *http.Request) bool {
		switch r.URL.Path {
		case "/cut":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
			c.Write(bytes.Repeat([]byte("x"), 1000))
			time.Sleep(20 * time.Millisecond)
		case "/cutchunked":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			time.Sleep(20 * time.Millisecond)
		case "/post":
		default:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return true
		}
		c.(*net.TCPConn).SetLinger(0)
		return false
	})
	p := newProxy(t, true, []string{addr}, Route{Retries: &Retries{Attempts: 3, On: []string{"reset", "5xx"}, MaxBuffer: 1 << 10}})
	for _, path := range []string{"/cut", "/cutchunked"} {
		_, br := raw(t, p.addr, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Errorf("%s: the cut body read whole, want an error", path)
		}
	}
	before := requests.Load()
	_, br := raw(t, p.addr, "POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody")
	resp, _ := readResp(t, br, "POST")
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Attache-Attempts") != "1" {
		t.Errorf("reset POST: %d, attempts %s; want 502 in 1", resp.StatusCode, resp.Header.Get("X-Attache-Attempts"))
	}
	if n := requests.Load() - before; n != 1 {
		t.Errorf("the POST reached the upstream %d times, want 1", n)
	}
	_, br = raw(t, p.addr, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("after the resets: %d %q, want 200 ok", resp.StatusCode, body)
	}
}

// TestEngineLargeAndSlowReader: large bodies of every framing arrive
// whole and in order, to an app that first reads nothing (the engine
// stops reading the upstream while the app's side is full).
func TestEngineLargeAndSlowReader(t *testing.T) {
	const size = 8 << 20
	pattern := make([]byte, size)
	for i := range pattern {
		pattern[i] = byte(i*7 + i>>13)
	}
	addr, _ := serveBackend(t, func(c net.Conn, r *http.Request) bool {
		switch r.URL.Path {
		case "/length":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
			c.Write(pattern)
		case "/chunked":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
			bw := bufio.NewWriter(c)
			for off := 0; off < size; off += 100000 {
				end := min(off+100000, size)
				fmt.Fprintf(bw, "%x;ext=1\r\n", end-off)
				bw.Write(pattern[off:end])
				bw.WriteString("\r\n")
			}
			bw.WriteString("0\r\nX-Trailer: yes\r\n\r\n")
			bw.Flush()
		case "/close":
			io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
			c.Write(pattern)
			return false
		}
		return true
	})
	p := newProxy(t, true, []string{addr}, Route{})
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for _, path := range []string{"/length", "/chunked", "/length", "/close"} {
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n")
		time.Sleep(200 * time.Millisecond) // a slow reader
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(body, pattern) {
			t.Fatalf("%s: %d bytes, %v; want the %d sent", path, len(body), err, size)
		}
		if path == "/chunked" && resp.Trailer.Get("X-Trailer") != "yes" {
			t.Errorf("%s: trailer %q, want yes", path, resp.Trailer.Get("X-Trailer"))
		}
	}
}

// TestEngineTimeouts: the route timeout is a 504 from attache; a per-try
// timeout moves the request to the next endpoint; an idle keep-alive
// connection closes after the listener's idle timeout.
func TestEngineTimeouts(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	slow, _ := serveBackend(t, func(c net.Conn, r *http.Request) bool { <-hang; return false })
	fast, _ := serveBackend(t, func(c net.Conn, r *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast")
		return true
	})

	p := newProxy(t, true, []string{slow}, Route{Timeout: config.Duration(200 * time.Millisecond)})
	start := time.Now()
	_, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, _ := readResp(t, br, "GET")
	if took := time.Since(start); resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Attache-Reason") != "route timeout" || took > 2*time.Second {
		t.Errorf("route timeout: %d %q after %v, want 504 route timeout after about 200ms", resp.StatusCode, resp.Header.Get("X-Attache-Reason"), took)
	}

	p = newProxy(t, true, []string{slow, fast}, Route{Retries: &Retries{Attempts: 2, On: []string{"5xx"},
		PerTryTimeout: config.Duration(100 * time.Millisecond), Backoff: Backoff{Base: config.Duration(time.Millisecond), Max: config.Duration(time.Millisecond)}, BudgetPercent: 100}})
	_, br = raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := readResp(t, br, "GET")
	if resp.StatusCode != 200 || body != "fast" || resp.Header.Get("X-Attache-Attempts") != "2" {
		t.Errorf("per-try timeout: %d %q attempts %s, want 200 fast in 2", resp.StatusCode, body, resp.Header.Get("X-Attache-Attempts"))
	}

	p = newProxyIdle(t, true, []string{fast}, Route{}, nil, 300*time.Millisecond)
	_, br = raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	readResp(t, br, "GET")
	start = time.Now()
	if !closed(br) {
		t.Fatal("idle connection not closed")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("idle connection closed after %v, want about 1.3s at most", took)
	}
}

// TestEngineDrain: a drain closes idle connections at once; a request in
// flight finishes, with Connection: close, and its connection closes.
func TestEngineDrain(t *testing.T) {
	release := make(chan struct{})
	addr, _ := serveBackend(t, func(c net.Conn, r *http.Request) bool {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	p := newProxy(t, true, []string{addr}, Route{})
	_, idle := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	readResp(t, idle, "GET")
	_, busy := raw(t, p.addr, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // the request is in flight
	p.srv.Drain()
	if !closed(idle) {
		t.Error("idle connection not closed by the drain")
	}
	close(release)
	resp, body := readResp(t, busy, "GET")
	if resp.StatusCode != 200 || body != "ok" {
		t.Errorf("request in flight: %d %q, want 200 ok", resp.StatusCode, body)
	}
	if !closed(busy) {
		t.Error("connection of the request in flight not closed after it")
	}
	// New connections are still served, with Connection: close.
	_, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); !resp.Close {
		t.Error("response during a drain without Connection: close")
	}
}

// TestChunkScan: the scanner finds the end of valid chunked bodies fed
// in every split, and refuses malformed ones.
func TestChunkScan(t *testing.T) {
	good := []string{
		"0\r\n\r\n",
		"5\r\nhello\r\n0\r\n\r\n",
		"5;ext=\"x\"\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-Trailer: v\r\nOther: w\r\n\r\n",
		"fffff\r\n" + strings.Repeat("z", 0xfffff) + "\r\n0\r\n\r\n",
	}
	for _, body := range good {
		for _, step := range []int{1, 3, 7, 4096, len(body)} {
			var s chunkScan
			in := body + "NEXT"
			consumed, done := 0, false
			for off := 0; off < len(in) && !done; off += step {
				n, d, err := s.scan([]byte(in[off:min(off+step, len(in))]))
				if err != nil {
					t.Fatalf("%.20q step %d: %v", body, step, err)
				}
				consumed += n
				done = d
			}
			if !done || consumed != len(body) {
				t.Errorf("%.20q step %d: consumed %d done %v, want %d true", body, step, consumed, done, len(body))
			}
		}
	}
	bad := []string{
		"\r\n",
		"g\r\n",
		"5\nhello\r\n0\r\n\r\n",
		"5\r\nhelloX\r\n",
		"1234567890abcdef0\r\n",
		"0\r\nbad\nline\r\n\r\n",
		"5\x01\r\n",
	}
	for _, body := range bad {
		var s chunkScan
		if _, _, err := s.scan([]byte(body)); err == nil {
			t.Errorf("%q: no error, want one", body)
		}
	}
}

// TestEngineAttemptsAndIDs: x-attache-attempts, a request id and a
// traceparent are on what the engine sends, and the retried request
// keeps its id.
func TestEngineAttemptsAndIDs(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	var n atomic.Int64
	addr, _ := serveBackend(t, func(c net.Conn, r *http.Request) bool {
		mu.Lock()
		ids = append(ids, r.Header.Get("X-Request-Id")+" "+strconv.Itoa(len(r.Header.Get("Traceparent"))))
		mu.Unlock()
		if n.Add(1) == 1 {
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
			return true
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	p := newProxy(t, true, []string{addr}, Route{Retries: &Retries{Attempts: 2, On: []string{"5xx"},
		Backoff: Backoff{Base: config.Duration(time.Millisecond), Max: config.Duration(time.Millisecond)}, BudgetPercent: 100}})
	_, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := readResp(t, br, "GET")
	if resp.StatusCode != 200 || body != "ok" || resp.Header.Get("X-Attache-Attempts") != "2" {
		t.Fatalf("got %d %q attempts %s, want 200 ok in 2", resp.StatusCode, body, resp.Header.Get("X-Attache-Attempts"))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 2 || ids[0] != ids[1] || len(ids[0]) != 32+3 {
		t.Errorf("request ids and traceparent lengths of the tries: %q, want one 32-digit id twice and 55", ids)
	}
}

// TestEngineConnectFailureAndNames: a refused connect (in the loop) is
// retried on the next endpoint, whose name is resolved by a dial
// goroutine; the connection is then pooled.
func TestEngineConnectFailureAndNames(t *testing.T) {
	addr, _ := serveBackend(t, func(c net.Conn, r *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	_, port, _ := net.SplitHostPort(addr)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := ln.Addr().String()
	ln.Close()
	p := newProxy(t, true, []string{refused, "localhost:" + port}, Route{Retries: &Retries{Attempts: 2, On: []string{"connect_failure"}, MaxBuffer: 1 << 10,
		Backoff: Backoff{Base: config.Duration(time.Millisecond), Max: config.Duration(time.Millisecond)}, BudgetPercent: 100}})
	for i := range 3 {
		_, br := raw(t, p.addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
		resp, body := readResp(t, br, "POST")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q attempts %s, want 200 ok", i, resp.StatusCode, body, resp.Header.Get("X-Attache-Attempts"))
		}
		if a := resp.Header.Get("X-Attache-Attempts"); i == 0 && a != "2" {
			t.Errorf("first request: attempts %s, want 2 (the refused endpoint, then the named one)", a)
		}
	}
}

// TestEngineByteByByte: a request that arrives a byte at a time, head and
// body, is served once whole; a pipelined pair split the same way too.
func TestEngineByteByByte(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: a\r\n\r\n"
	for i := range len(msg) {
		if _, err := c.Write([]byte{msg[i]}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	br := bufio.NewReader(c)
	if resp, body := readResp(t, br, "POST"); body != "echo:hello" || resp.Header.Get("X-Path") != "/one" {
		t.Errorf("first: %q for %s, want echo:hello for /one", body, resp.Header.Get("X-Path"))
	}
	if resp, body := readResp(t, br, "GET"); body != "echo:" || resp.Header.Get("X-Path") != "/two" {
		t.Errorf("second: %q for %s, want echo: for /two", body, resp.Header.Get("X-Path"))
	}
}
