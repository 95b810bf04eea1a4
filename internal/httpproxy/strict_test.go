package httpproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// eachPath runs a test of behaviour every path must share on the fast
// path under test (the engine, or the goroutine path alone) and on
// net/http's.
func eachPath(t *testing.T, run func(t *testing.T, fast bool)) {
	t.Helper()
	for _, fast := range []bool{true, false} {
		name := "nethttp"
		if fast {
			name = "fast"
		}
		t.Run(name, func(t *testing.T) { run(t, fast) })
	}
}

// headBackend answers every request with the raw bytes resp and reports
// on closed, per connection, whether attache closed it (true) or left it
// open for 5 s (false).
func headBackend(t *testing.T, resp string) (addr string, closed chan bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	closed = make(chan bool, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				r, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.Copy(io.Discard, r.Body)
				io.WriteString(c, resp)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = br.ReadByte()
				var ne net.Error
				closed <- err != nil && !(errors.As(err, &ne) && ne.Timeout())
			}()
		}
	}()
	return ln.Addr().String(), closed
}

// TestUpstreamHeadInvalid: a response head the upstream sends that is not
// valid HTTP/1.1 (RFC 9110 5.5 field values, RFC 9112 status lines and
// field lines) never reaches the app: it gets a 502, and the upstream
// connection is closed.
func TestUpstreamHeadInvalid(t *testing.T) {
	const tail = "Content-Length: 2\r\n\r\nok"
	// On net/http's path its Transport reads the head: an obs-fold is read
	// as a space (RFC 9112 5.2 allows either), and Transfer-Encoding wins
	// over Content-Length (the body then fails as chunked: a cut response).
	netHTTPDiffers := map[string]bool{"obs-fold": true, "Content-Length and chunked": true}
	for _, tc := range []struct{ name, head string }{
		{"bare LF in value", "HTTP/1.1 200 OK\r\nX-A: 1\n2\r\n"},
		{"bare CR in value", "HTTP/1.1 200 OK\r\nX-A: 1\r2\r\n"},
		{"NUL in value", "HTTP/1.1 200 OK\r\nX-A: 1\x002\r\n"},
		{"DEL in value", "HTTP/1.1 200 OK\r\nX-A: 1\x7f2\r\n"},
		{"control in value", "HTTP/1.1 200 OK\r\nX-A: 1\x1b2\r\n"},
		{"trailing VT in value", "HTTP/1.1 200 OK\r\nX-A: 1\x0b\r\n"},
		{"leading FF in value", "HTTP/1.1 200 OK\r\nX-A: \x0c1\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n"},
		{"space in name", "HTTP/1.1 200 OK\r\nX A: 1\r\n"},
		{"space before colon", "HTTP/1.1 200 OK\r\nX-A : 1\r\n"},
		{"empty name", "HTTP/1.1 200 OK\r\n: 1\r\n"},
		{"no colon", "HTTP/1.1 200 OK\r\nX-A 1\r\n"},
		{"NUL in name", "HTTP/1.1 200 OK\r\nX\x00A: 1\r\n"},
		{"four-digit status", "HTTP/1.1 2000 OK\r\n"},
		{"two-digit status", "HTTP/1.1 20 OK\r\n"},
		{"status 000", "HTTP/1.1 000 OK\r\n"},
		{"status 099", "HTTP/1.1 099 OK\r\n"},
		{"no space after status", "HTTP/1.1 200OK\r\n"},
		{"lower-case protocol", "http/1.1 200 OK\r\n"},
		{"HTTP/2.0 status line", "HTTP/2.0 200 OK\r\n"},
		{"control in reason", "HTTP/1.1 200 O\x00K\r\n"},
		{"bare CR in reason", "HTTP/1.1 200 O\rK\r\n"},
		{"Content-Length and chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachPath(t, func(t *testing.T, fast bool) {
				if !fast && netHTTPDiffers[tc.name] {
					t.Skip("net/http's Transport reads this head its own way")
				}
				addr, upClosed := headBackend(t, tc.head+tail)
				p := newProxy(t, fast, []string{addr}, Route{})
				_, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				resp, body := readResp(t, br, "GET")
				if resp.StatusCode != http.StatusBadGateway {
					t.Errorf("got %d %q (X-A %q), want 502", resp.StatusCode, body, resp.Header.Get("X-A"))
				}
				if !<-upClosed {
					t.Error("upstream connection left open after an invalid response head")
				}
			})
		})
	}
	// Valid heads still pass: obs-text, tabs, empty values, no reason.
	for _, head := range []string{
		"HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\tx\r\n",
		"HTTP/1.1 200 OK\r\nX-A:\r\n",
		"HTTP/1.1 200\r\n",
		"HTTP/1.1 200 \r\n",
	} {
		eachPath(t, func(t *testing.T, fast bool) {
			addr, _ := headBackend(t, head+tail)
			p := newProxy(t, fast, []string{addr}, Route{})
			_, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
				t.Errorf("%q: got %d %q, want 200 ok", head, resp.StatusCode, body)
			}
		})
	}
}

// TestFramingBeforeHandOff: the framing checks run on every request head
// before anything hands it on (to the goroutine path, to net/http): a
// request with both Content-Length and Transfer-Encoding is a 400 and the
// connection closes (RFC 9112 6.1), whatever else in it would have sent
// it elsewhere.
func TestFramingBeforeHandOff(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	const both = "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"
	for _, tc := range []struct{ name, req string }{
		{"Upgrade", "POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + both + "\r\n0\r\n\r\n"},
		{"Upgrade after", "POST / HTTP/1.1\r\nHost: a\r\n" + both + "Upgrade: websocket\r\n\r\n0\r\n\r\n"},
		{"h2c upgrade", "POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n" + both + "\r\n0\r\n\r\n"},
		{"Expect other than 100-continue", "POST / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n" + both + "\r\n0\r\n\r\n"},
		{"percent-encoded target", "POST /%61 HTTP/1.1\r\nHost: a\r\n" + both + "\r\n0\r\n\r\n"},
		{"absolute target", "POST http://a/ HTTP/1.1\r\nHost: a\r\n" + both + "\r\n0\r\n\r\n"},
		{"HTTP/1.2", "POST / HTTP/1.2\r\nHost: a\r\n" + both + "\r\n0\r\n\r\n"},
		{"bare LF head", "POST / HTTP/1.1\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\r\n\r\n"},
		{"bare LF head, CRLF lines", "POST / HTTP/1.1\r\nHost: a\r\n" + both + "\n0\r\n\r\n"},
		{"head over 4 KiB", "POST / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\n" + both + "\r\n0\r\n\r\n"},
		{"head over 8 KiB", "POST / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 9000) + "\r\n" + both + "\r\n0\r\n\r\n"},
		{"head over 64 KiB, bare LFs", "POST / HTTP/1.1\nHost: a\nX-Big: " + strings.Repeat("b", 70000) + "\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\r\n\r\n"},
		{"too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X:1\r\n", 600) + "\r\n"},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"TE chunked, gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"},
		{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"},
		{"Upgrade and differing CLs", "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
		{"Upgrade and two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nUpgrade: websocket\r\n\r\n"},
		{"Upgrade and NUL", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nX-A: 1\x002\r\n\r\n"},
		{"Upgrade and obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nX-A: 1\r\n 2\r\n\r\n"},
		{"Upgrade and bad name", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nX(A): 1\r\n\r\n"},
		{"control in target", "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"bare CR in target", "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, br := raw(t, p.addr, tc.req)
			resp, body := readResp(t, br, "POST")
			want := http.StatusBadRequest
			if strings.HasPrefix(tc.name, "HTTP/3") {
				want = http.StatusHTTPVersionNotSupported // as net/http answers
			}
			if resp.StatusCode != want {
				t.Errorf("got %d %q, want %d", resp.StatusCode, body, want)
			}
			if !closed(br) {
				t.Error("connection left open after the 400")
			}
		})
	}
}

// TestHandOffStillServed: what the stricter checks leave to net/http is
// still served there.
func TestHandOffStillServed(t *testing.T) {
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{})
	for _, tc := range []struct{ name, req, want string }{
		{"percent-encoded target", "GET /%61 HTTP/1.1\r\nHost: a\r\n\r\n", "/%61"},
		{"bare LF head", "GET /bare HTTP/1.1\nHost: a\n\n", "/bare"},
		{"CRLF then bare LF", "GET /mixed HTTP/1.1\r\nHost: a\r\n\n", "/mixed"},
		{"HTTP/1.2", "GET /minor HTTP/1.2\r\nHost: a\r\n\r\n", "/minor"},
		{"head over 8 KiB", "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 9000) + "\r\n\r\n", "/big"},
		{"head over 64 KiB, bare LFs", "GET /bigbare HTTP/1.1\nHost: a\nX-Big: " + strings.Repeat("b", 70000) + "\n\n", "/bigbare"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, br := raw(t, p.addr, tc.req)
			resp, _ := readResp(t, br, "GET")
			if resp.StatusCode != 200 || resp.Header.Get("X-Path") != tc.want {
				t.Errorf("got %d for %q, want 200 for %q", resp.StatusCode, resp.Header.Get("X-Path"), tc.want)
			}
		})
	}
}

// TestRequestTrailers: a request trailer section carries fields with
// token names, without obs-fold or controls, and none of the fields that
// frame or route a message; anything else is a 400, on every path.
func TestRequestTrailers(t *testing.T) {
	const head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
	for _, tc := range []struct {
		name, trailers string
		ok             bool
	}{
		{"none", "", true},
		{"plain", "X-Checksum: 1234\r\n", true},
		{"Content-Length", "Content-Length: 5\r\n", false},
		{"Transfer-Encoding", "Transfer-Encoding: chunked\r\n", false},
		{"Host", "Host: b\r\n", false},
		{"Trailer", "Trailer: X-A\r\n", false},
		{"Authorization", "authorization: Basic eDp5\r\n", false},
		{"space in name", "X A: 1\r\n", false},
		{"space before colon", "X-A : 1\r\n", false},
		{"no colon", "X-A\r\n", false},
		{"obs-fold", "X-A: 1\r\n 2\r\n", false}, // net/http reads it as a space (RFC 9112 5.2)
		{"NUL in value", "X-A: 1\x002\r\n", false},
		{"bare CR in value", "X-A: 1\r2\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachPath(t, func(t *testing.T, fast bool) {
				if !fast && tc.name == "obs-fold" {
					t.Skip("net/http reads an obs-fold as a space")
				}
				b := newEcho(t)
				p := newProxy(t, fast, []string{b.addr}, Route{})
				_, br := raw(t, p.addr, head+tc.trailers+"\r\n")
				resp, body := readResp(t, br, "POST")
				switch {
				case tc.ok && (resp.StatusCode != 200 || body != "echo:abc"):
					t.Errorf("got %d %q, want 200 echo:abc", resp.StatusCode, body)
				case !tc.ok && resp.StatusCode != http.StatusBadRequest:
					t.Errorf("got %d %q, want 400", resp.StatusCode, body)
				}
			})
		})
	}
}

// TestFirstHeadTimeout: a connection that sends nothing, or only part of
// a head, is closed after the read-header timeout from the accept, not
// after idle_timeout; a head cut across hand-offs (over 4 KiB: engine,
// goroutine path, net/http) keeps its deadline.
func TestFirstHeadTimeout(t *testing.T) {
	for _, tc := range []struct{ name, send string }{
		{"nothing", ""},
		{"part of a head", "GET / HTTP/1.1\r\nHost: a\r\n"},
		{"part of a head over 4 KiB", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 5000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachPath(t, func(t *testing.T, fast bool) {
				b := newEcho(t)
				p := newProxySetup(t, fast, []string{b.addr}, Route{}, nil, time.Hour, func(s *Server) {
					s.headerTimeout = 200 * time.Millisecond
					s.srv.ReadHeaderTimeout = s.headerTimeout
				})
				c, br := raw(t, p.addr, tc.send)
				c.SetDeadline(time.Now().Add(10 * time.Second)) // the bound: far beyond the timeout and the engine's sweep
				_, err := br.ReadByte()
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("connection still open after 10 s, want it closed after the read-header timeout")
				}
			})
		})
	}
}

// TestPrereadConnKeepsHeadDeadline: net/http's first read deadline on a
// handed-off connection (its ReadHeaderTimeout for the pending head) is
// held to the deadline the head already had; later ones are its own.
func TestPrereadConnKeepsHeadDeadline(t *testing.T) {
	now := time.Now()
	head := now.Add(time.Second)
	for _, tc := range []struct {
		name     string
		set      []time.Time
		want     []time.Time
		deadline time.Time
	}{
		{"later first call held", []time.Time{now.Add(30 * time.Second), {}}, []time.Time{head, {}}, head},
		{"no deadline held", []time.Time{{}, {}}, []time.Time{head, {}}, head},
		{"earlier first call kept", []time.Time{now, {}}, []time.Time{now, {}}, head},
		{"none carried", []time.Time{now.Add(30 * time.Second)}, []time.Time{now.Add(30 * time.Second)}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &deadlineConn{}
			c := &prereadConn{Conn: rec, headDeadline: tc.deadline}
			for _, d := range tc.set {
				c.SetReadDeadline(d)
			}
			for i := range tc.want {
				if !rec.got[i].Equal(tc.want[i]) {
					t.Errorf("deadline %d: got %v, want %v", i, rec.got[i], tc.want[i])
				}
			}
		})
	}
}

// deadlineConn records the read deadlines set on it.
type deadlineConn struct {
	net.Conn
	got []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.got = append(c.got, t)
	return nil
}

// TestForwardedForPolicy: X-Forwarded-For upstream is the address of
// attache's peer, the app, on every path: what the app sent in it is not
// a hop attache saw, and no hop is vouched for upstream; a sticky split's
// trusted_proxies only choose its side (docs/http.md).
func TestForwardedForPolicy(t *testing.T) {
	eachPath(t, func(t *testing.T, fast bool) {
		b := newEcho(t)
		p := newProxy(t, fast, []string{b.addr}, Route{})
		for _, tc := range []struct{ name, header string }{
			{"none", ""},
			{"one", "X-Forwarded-For: 10.0.0.1\r\n"},
			{"two headers", "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n"},
		} {
			_, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n"+tc.header+"\r\n")
			if resp, _ := readResp(t, br, "GET"); resp.Header.Get("X-XFF") != "127.0.0.1" {
				t.Errorf("%s: upstream got X-Forwarded-For %q, want %q", tc.name, resp.Header.Get("X-XFF"), "127.0.0.1")
			}
		}
	})
}

// TestHalfClosedClient: an app that sends its request and shuts down its
// write side gets its response, on every path (not a 499).
func TestHalfClosedClient(t *testing.T) {
	eachPath(t, func(t *testing.T, fast bool) {
		var answered atomic.Int64
		up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The answer comes after attache has read the app's end of
			// stream (a fixed wait: the test passes whatever it is).
			time.Sleep(300 * time.Millisecond)
			answered.Add(1)
			io.WriteString(w, "late")
		})}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go up.Serve(ln)
		t.Cleanup(func() { up.Close() })
		p := newProxy(t, fast, []string{ln.Addr().String()}, Route{})
		c, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "late" {
			t.Errorf("got %d %q, want 200 late", resp.StatusCode, body)
		}
	})
}

// TestChunkedStrict: the engine's chunkScan and the goroutine path's
// decoder (readChunkSize, readCRLF, skipTrailers) agree on what a chunked
// body is, extensions and trailers included.
func TestChunkedStrict(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		ok         bool
	}{
		{"plain", "3\r\nabc\r\n0\r\n\r\n", true},
		{"extension", "3;a=b;c=\"d e\"\r\nabc\r\n0\r\n\r\n", true},
		{"whitespace before extension", "3 \t;a\r\nabc\r\n0\r\n\r\n", true},
		{"trailing whitespace", "3 \r\nabc\r\n0\r\n\r\n", true},
		{"trailer", "0\r\nX-A: 1\r\nX-B:\r\n\r\n", true},
		{"junk after size", "3 x\r\nabc\r\n0\r\n\r\n", false},
		{"bare CR in extension", "3;a\rb\r\nabc\r\n0\r\n\r\n", false},
		{"NUL in extension", "3;a\x00\r\nabc\r\n0\r\n\r\n", false},
		{"bare LF size line", "3\nabc\r\n0\r\n\r\n", false},
		{"size overflow", "10000000000000003\r\nabc\r\n0\r\n\r\n", false},
		{"sixteen digits", "0000000000000003\r\nabc\r\n0\r\n\r\n", false},
		{"negative size", "-3\r\nabc\r\n0\r\n\r\n", false},
		{"trailer Content-Length", "0\r\nContent-Length: 3\r\n\r\n", false},
		{"trailer transfer-encoding", "0\r\ntransfer-encoding: chunked\r\n\r\n", false},
		{"trailer Host", "0\r\nHOST: b\r\n\r\n", false},
		{"trailer obs-fold", "0\r\nX-A: 1\r\n 2\r\n\r\n", false},
		{"trailer space in name", "0\r\nX A: 1\r\n\r\n", false},
		{"trailer no colon", "0\r\nX-A\r\n\r\n", false},
		{"trailer NUL", "0\r\nX-A: \x00\r\n\r\n", false},
		{"trailer bare CR", "0\r\nX-A: 1\r2\r\n\r\n", false},
		{"trailer bare LF", "0\r\nX-A: 1\n\r\n", false},
		{"too many trailers", "0\r\n" + strings.Repeat("X-A: 1\r\n", 101) + "\r\n", false},
		{"extension over 4 KiB", "3;" + strings.Repeat("e", 4100) + "\r\nabc\r\n0\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, scanErr := scanWhole(tc.body + "NEXT")
			if (scanErr == nil) != tc.ok || tc.ok && n != len(tc.body) {
				t.Errorf("chunkScan: got %d, %v; want ok=%v at %d", n, scanErr, tc.ok, len(tc.body))
			}
			n, decErr := decodeChunked(tc.body+"NEXT", cliReadBuf)
			if (decErr == nil) != tc.ok || tc.ok && n != len(tc.body) {
				t.Errorf("decoder: got %d, %v; want ok=%v at %d", n, decErr, tc.ok, len(tc.body))
			}
		})
	}
}

// scanWhole runs chunkScan over s a byte at a time and returns where the
// body ended (-1: it did not).
func scanWhole(s string) (int, error) {
	var cs chunkScan
	for i := 0; i < len(s); i++ {
		n, done, err := cs.scan([]byte{s[i]})
		if err != nil {
			return i, err
		}
		if done {
			return i + n, nil
		}
	}
	return -1, io.ErrUnexpectedEOF
}

// decodeChunked decodes the chunked body at the start of s as the
// goroutine path does, with a read buffer of size, and returns where it
// ended.
func decodeChunked(s string, size int) (int, error) {
	sr := strings.NewReader(s)
	br := bufio.NewReaderSize(sr, size)
	for {
		n, err := readChunkSize(br)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			if err := skipTrailers(br, nil); err != nil {
				return 0, err
			}
			return len(s) - sr.Len() - br.Buffered(), nil
		}
		if _, err := br.Discard(int(n)); err != nil {
			return 0, err
		}
		if err := readCRLF(br); err != nil {
			return 0, err
		}
	}
}

// TestTokenChar checks tokenChar's bit sets against RFC 9110's tchar.
func TestTokenChar(t *testing.T) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		want := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
		if got := tokenChar(b); got != want {
			t.Errorf("tokenChar(%q): got %v, want %v", b, got, want)
		}
	}
}

// TestForbiddenTrailer checks forbiddenTrailer against its list, in any
// case, and a few names it must let pass.
func TestForbiddenTrailer(t *testing.T) {
	for _, name := range []string{"authorization", "cache-control", "connection", "content-encoding", "content-length",
		"content-range", "content-type", "expect", "host", "keep-alive", "max-forwards", "pragma", "proxy-authenticate",
		"proxy-authorization", "proxy-connection", "range", "realm", "te", "trailer", "transfer-encoding", "upgrade",
		"www-authenticate"} {
		for _, n := range []string{name, strings.ToUpper(name), http.CanonicalHeaderKey(name)} {
			if !forbiddenTrailer(n) || !forbiddenTrailer([]byte(n)) {
				t.Errorf("forbiddenTrailer(%q): got false, want true", n)
			}
		}
	}
	for _, n := range []string{"", "t", "x-te", "hosts", "grpc-status", "x-checksum", "server-timing", "content-lengths"} {
		if forbiddenTrailer(n) {
			t.Errorf("forbiddenTrailer(%q): got true, want false", n)
		}
	}
}

// TestResponseTrailers: a response trailer field that frames, routes or
// authenticates, or is malformed, never reaches the app: the response is
// cut (the app's connection closes before its end, or before its head when
// the engine read it whole at once), on every path.
func TestResponseTrailers(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nok\r\n0\r\n"
	for _, tc := range []struct {
		name, trailers string
		ok             bool
	}{
		{"plain", "X-T: 1\r\n", true},
		{"Content-Length", "Content-Length: 5\r\n", false},
		{"Host", "Host: b\r\n", false},
		{"space in name", "X T: 1\r\n", false},
		{"control in value", "X-T: 1\x1b\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachPath(t, func(t *testing.T, fast bool) {
				addr, _ := headBackend(t, head+tc.trailers+"\r\n")
				p := newProxy(t, fast, []string{addr}, Route{})
				_, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					if tc.ok {
						t.Fatalf("reading the response head: %v", err)
					}
					return // cut before its head (the engine had it all in one read)
				}
				body, err := io.ReadAll(resp.Body)
				switch {
				case tc.ok && (err != nil || string(body) != "ok"):
					t.Errorf("got %q, %v; want ok", body, err)
				case !tc.ok && err == nil:
					t.Errorf("got the whole response (trailers %v), want it cut", resp.Trailer)
				}
			})
		})
	}
}
