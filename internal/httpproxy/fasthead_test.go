package httpproxy

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// FuzzParseHead checks the fast path's request parser against net/http's:
// a head the fast path serves is one net/http accepts, with the same
// method, path, Host and, above all, the same body framing (a difference
// there is request smuggling); a head it hands off, net/http reads with
// the same framing or refuses; a bare-LF head is only ever handed off.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"PUT /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /%61 HTTP/1.1\r\nHost: a\r\nExpect: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n\n",
		"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, bare := headEnd([]byte(s))
		if n < 0 {
			return
		}
		var h reqHead
		var v verdict
		head := s[:n] + "\r\n"
		if bare {
			if v, _ = h.parseBare([]byte(s[:n])); v == serveFast {
				t.Fatalf("bare-LF head %q served by the fast path", s[:n])
			}
			head = s[:n] + "\n\n"
		} else {
			v, _ = h.parse(s[:n])
		}
		if v == reject {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			if v == handOff {
				return // net/http refuses it itself
			}
			t.Fatalf("fast path serves %q, net/http rejects it: %v", s[:n], err)
		}
		chunked := len(req.TransferEncoding) == 1 && req.TransferEncoding[0] == "chunked"
		length := req.ContentLength
		if !chunked && length == 0 {
			length = -1 // net/http: no body
		}
		want := h.length
		if want == 0 {
			want = -1
		}
		if req.Method == "PRI" && req.ProtoMajor == 2 {
			return // the HTTP/2 preface: no framing of its own
		}
		if chunked != h.chunked || !chunked && length != want {
			t.Fatalf("%q: framing: fast path chunked=%v length=%d, net/http chunked=%v length=%d", s[:n], h.chunked, h.length, chunked, req.ContentLength)
		}
		if v == handOff {
			return // an odd target: net/http decodes its path
		}
		if req.Method != h.method || req.URL.Path != h.path || req.Host != h.host {
			t.Fatalf("%q: fast path %s %s host %q, net/http %s %s host %q", s[:n], h.method, h.path, h.host, req.Method, req.URL.Path, req.Host)
		}
	})
}

// FuzzHeadEnd checks the one-pass headEnd against its definition: the
// head ends at the first CRLF CRLF, and is bare when an LF LF comes
// before it (or, without one, anywhere).
func FuzzHeadEnd(f *testing.F) {
	for _, s := range []string{
		"", "\n", "\r\n", "\r\n\r\n", "\n\n", "\r\n\n", "GET / HTTP/1.1\r\nHost: a\r\n\r\nbody\n\n",
		"GET / HTTP/1.1\nHost: a\n\n", "HTTP/1.1 200 OK\r\nA: b\r\n\r", "a\r\n\r\r\n\r\n", "a\n\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		want, wantBare := -1, false
		i := bytes.Index(b, []byte("\r\n\r\n"))
		head := b
		if i >= 0 {
			head = b[:i+2]
			want = i + 2
		}
		if j := bytes.Index(head, []byte("\n\n")); j >= 0 {
			want, wantBare = j, true
		}
		if n, bare := headEnd(b); n != want || bare != wantBare {
			t.Fatalf("headEnd(%q) = %d, %v; want %d, %v", s, n, bare, want, wantBare)
		}
	})
}
