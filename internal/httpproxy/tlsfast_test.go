package httpproxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawTLS sends bytes on a new TLS connection to addr offering the ALPN
// protocols alpn, and returns the connection and a reader of it.
func rawTLS(t *testing.T, addr string, alpn []string, data string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: alpn})
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

// tlsClosed reports whether the server closed c (after what was read): a
// TLS close_notify or a bare close.
func tlsClosed(br *bufio.Reader) bool {
	_, err := br.ReadByte()
	return err == io.EOF || err != nil && !isTimeout(err)
}

// TestTLSFraming: HTTP/1.x over TLS gets the checks of every head that
// cleartext gets: a request with both Content-Length and
// Transfer-Encoding, or an obs-fold, is a 400 and the connection closes
// (RFC 9112 6.1, 5.2), where net/http would drop Content-Length or unfold
// the line and serve it.
func TestTLSFraming(t *testing.T) {
	p := newProxy(t, true, []string{newEcho(t).addr}, Route{})
	addr := serveTLS(t, p.srv)
	const both = "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"
	for _, tc := range []struct {
		name string
		alpn []string
		req  string
	}{
		{"CL and TE", []string{"http/1.1"}, "POST / HTTP/1.1\r\nHost: a\r\n" + both + "\r\n0\r\n\r\n"},
		{"CL and TE, no ALPN", nil, "POST / HTTP/1.1\r\nHost: a\r\n" + both + "\r\n0\r\n\r\n"},
		{"TE and CL", []string{"http/1.1"}, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"},
		{"CL and TE, HTTP/1.0", nil, "POST / HTTP/1.0\r\n" + both + "\r\n0\r\n\r\n"},
		{"CL and TE, Upgrade", []string{"http/1.1"}, "POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + both + "\r\n0\r\n\r\n"},
		{"CL and TE, head over 8 KiB", []string{"http/1.1"}, "POST / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 9000) + "\r\n" + both + "\r\n0\r\n\r\n"},
		{"CL and TE, second request", []string{"http/1.1"}, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\n" + both + "\r\n0\r\n\r\n"},
		{"obs-fold", []string{"http/1.1"}, "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n"},
		{"obs-fold, no ALPN", nil, "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n"},
		{"obs-fold, Upgrade", []string{"http/1.1"}, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nX-A: 1\r\n 2\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, br := rawTLS(t, addr, tc.alpn, tc.req)
			if strings.Contains(tc.name, "second request") {
				if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
					t.Fatalf("first request: got %d, want 200", resp.StatusCode)
				}
			}
			resp, body := readResp(t, br, "POST")
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("got %d %q, want 400", resp.StatusCode, body)
			}
			if !tlsClosed(br) {
				t.Error("connection left open after the 400")
			}
		})
	}
}

// TestTLSFastServed: over TLS the fast path serves HTTP/1.x with
// X-Forwarded-Proto: https, and what it hands to net/http (a large head, a
// percent-encoded target, an upgrade with the WebSocket-style exchange
// after it) is still served there.
func TestTLSFastServed(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			fmt.Fprintf(w, "%s %s", r.URL.RequestURI(), r.Header.Get("X-Forwarded-Proto"))
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
	t.Cleanup(func() { srv.Close() })
	eachPath(t, func(t *testing.T, fast bool) {
		p := newProxy(t, fast, []string{ln.Addr().String()}, Route{})
		addr := serveTLS(t, p.srv)
		t.Run("requests", func(t *testing.T) {
			big := "X-Big: " + strings.Repeat("b", 9000) + "\r\n"
			c, br := rawTLS(t, addr, []string{"http/1.1"}, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
			for _, tc := range []struct{ name, req, want string }{
				{"plain", "", "/a https"},
				{"second", "GET /b HTTP/1.1\r\nHost: a\r\n\r\n", "/b https"},
				{"percent-encoded target", "GET /%61 HTTP/1.1\r\nHost: a\r\n\r\n", "/%61 https"},
				{"head over 8 KiB", "GET /big HTTP/1.1\r\nHost: a\r\n" + big + "\r\n", "/big https"},
			} {
				io.WriteString(c, tc.req)
				if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != tc.want {
					t.Errorf("%s: got %d %q, want 200 %q", tc.name, resp.StatusCode, body, tc.want)
				}
			}
		})
		t.Run("WebSocket", func(t *testing.T) {
			c, br := rawTLS(t, addr, nil, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
			if _, body := readResp(t, br, "GET"); body != "/a https" {
				t.Fatalf("got %q, want %q", body, "/a https")
			}
			io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v, want 101", resp, err)
			}
			for _, msg := range []string{"ping", "pong"} {
				io.WriteString(c, msg)
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
					t.Fatalf("echo: got %q (%v), want %q", got, err, msg)
				}
			}
		})
	})
}

// TestTLSDrainClosesIdle: a drain closes idle keep-alive connections
// over TLS, as it does in the clear.
func TestTLSDrainClosesIdle(t *testing.T) {
	p := newProxy(t, true, []string{newEcho(t).addr}, Route{})
	addr := serveTLS(t, p.srv)
	var idle []*bufio.Reader
	for _, alpn := range [][]string{{"http/1.1"}, nil} {
		_, br := rawTLS(t, addr, alpn, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("ALPN %v: got %d, want 200", alpn, resp.StatusCode)
		}
		idle = append(idle, br)
	}
	p.srv.Drain()
	for i, br := range idle {
		if !tlsClosed(br) {
			t.Errorf("connection %d: left open by the drain", i)
		}
	}
}
