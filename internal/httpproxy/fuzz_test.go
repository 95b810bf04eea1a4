package httpproxy

import (
	"bufio"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// FuzzResponseHead checks the fast path's response parser against
// net/http's: a head it relays is one net/http reads too, with the same
// status and body framing, and every line it forwards is a valid field.
func FuzzResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 204\r\nX-A: caf\xc3\xa9\t1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\n2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\r2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\x002\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n",
		"HTTP/1.1 200 O\x00K\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 000 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 100 \r\nTrAnsfer-EnCoding:ChunkEd\r\n\r\n", // interim: no body, framing unused
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, bare := headEnd([]byte(s))
		if n < 0 || bare {
			return
		}
		var r respHead
		head := []byte(s[:n])
		if !r.parse(head) {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(s[:n]+"\r\n")), nil)
		if err != nil {
			t.Fatalf("fast path relays %q, net/http rejects it: %v", s[:n], err)
		}
		if resp.StatusCode != r.status {
			t.Fatalf("%q: status %d, net/http %d", s[:n], r.status, resp.StatusCode)
		}
		// Framing matters only where a body may follow: a 1xx head is
		// skipped (readResponse) and a 204 or 304 has none (framingOf),
		// whatever their fields say, as net/http ignores them too.
		chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
		hasBody := r.status >= 200 && r.status != 204 && r.status != 304
		if hasBody && (chunked != r.chunked || !chunked && r.length >= 0 && resp.ContentLength != r.length) {
			t.Fatalf("%q: framing chunked=%v length=%d, net/http chunked=%v length=%d", s[:n], r.chunked, r.length, chunked, resp.ContentLength)
		}
		for _, l := range r.lines {
			line := head[l[0] : l[1]-2]
			colon := strings.IndexByte(string(line), ':')
			if colon <= 0 || !isToken(line[:colon]) || !validValue(line[colon+1:]) {
				t.Fatalf("%q: forwards line %q", s[:n], line)
			}
		}
	})
}

// FuzzChunked checks the two chunked-body readers against each other:
// the engine's chunkScan (fed a byte at a time) and the goroutine path's
// readChunkSize, readCRLF and skipTrailers end a body at the same byte
// or both refuse it, extensions and trailers included.
func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"0\r\n\r\n",
		"3\r\nabc\r\n0\r\n\r\n",
		"3;a=b;c=\"d e\"\r\nabc\r\n0\r\n\r\n",
		"3 \t;a\r\nabc\r\n0\r\n\r\n",
		"0\r\nX-A: 1\r\nX-B:\r\n\r\n",
		"3 x\r\nabc\r\n0\r\n\r\n",
		"3;a\rb\r\nabc\r\n0\r\n\r\n",
		"10000000000000003\r\nabc\r\n0\r\n\r\n",
		"0\r\nContent-Length: 3\r\n\r\n",
		"0\r\nX-A: 1\r\n 2\r\n\r\n",
		"0\r\nX-A: 1\r2\r\n\r\n",
		"0\r\nX-A: 1\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 4000 { // under both readers' line bounds, where they differ
			return
		}
		n1, err1 := scanWhole(s)
		n2, err2 := decodeChunked(s, 8<<10)
		if (err1 == nil) != (err2 == nil) || err1 == nil && n1 != n2 {
			t.Fatalf("%q: chunkScan %d, %v; decoder %d, %v", s, n1, err1, n2, err2)
		}
	})
}

// FuzzRequestTrailers checks skipTrailers against net/http's reader: a
// trailer section attache accepts is one net/http reads too, and none of
// its fields is one that frames, routes or authenticates a message.
func FuzzRequestTrailers(f *testing.F) {
	for _, s := range []string{
		"\r\n",
		"X-Checksum: 1234\r\n\r\n",
		"Content-Length: 5\r\n\r\n",
		"Host: b\r\n\r\n",
		"X A: 1\r\n\r\n",
		"X-A: 1\r\n 2\r\n\r\n",
		"X-A: 1\x002\r\n\r\n",
		"X-A: 1\r2\r\n\r\n",
		"X-A\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := skipTrailers(bufio.NewReaderSize(strings.NewReader(s), 8<<10), nil); err != nil {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + s)))
		if err != nil {
			t.Fatalf("reading the head: %v", err)
		}
		if _, err := io.ReadAll(req.Body); err != nil {
			t.Fatalf("attache accepts trailers %q, net/http rejects them: %v", s, err)
		}
		for k, vs := range req.Trailer {
			for _, v := range vs {
				if !validTrailerField(k, v) {
					t.Fatalf("attache accepts trailers %q with field %q: %q", s, k, v)
				}
			}
		}
	})
}

// BenchmarkParseHeads: the per-request parsing of the fast paths (a
// request head, a response head, a chunked body scanned), whose checks
// must stay one pass over the bytes.
func BenchmarkParseHeads(b *testing.B) {
	req := "GET /api/v1/items?id=42 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\nX-Request-Id: 0123456789abcdef\r\nCookie: session=abcdef0123456789; theme=dark\r\n"
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nDate: Mon, 07 Dec 2026 16:00:00 GMT\r\nServer: nginx\r\nCache-Control: no-cache\r\n")
	body := []byte("5;a=b\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Checksum: 1234\r\n\r\n")
	var h reqHead
	var r respHead
	b.ReportAllocs()
	for b.Loop() {
		h.parse(req)
		r.parse(resp)
		var cs chunkScan
		cs.scan(body)
	}
}

// FuzzForwardedFor checks the end-user walk over X-Forwarded-For and
// Forwarded lines that a client may write: it never panics, answers the
// peer or an address, and an answer that is an untrusted address from the
// header does not change whatever a client puts to the left of it (a
// header line before the others).
func FuzzForwardedFor(f *testing.F) {
	for _, s := range []string{
		"198.51.100.7", "203.0.113.1, 198.51.100.7, 127.0.0.1", "[2001:db8::7]:443", "2001:db8::7", "unknown", " , ,",
		"198.51.100.7:5123, ::ffff:127.0.0.1", "fe80::1%eth0",
		"for=198.51.100.7", `for="[2001:db8:cafe::17]:4711"`, `for=_hidden, for=198.51.100.7;proto=https`,
		`for=203.0.113.1;host="a,b;c", for=198.51.100.7`, `for="198.51.100.7`, `for=1.2.3.4;for=5.6.7.8`, `ext="a\"b";for=198.51.100.7`,
	} {
		f.Add(s, "for=_spoof, 203.0.113.9")
	}
	f.Fuzz(func(t *testing.T, header, spoof string) {
		peer := netip.MustParseAddr("127.0.0.1")
		lines := strings.Split(header, "\n")
		for _, forwarded := range []bool{false, true} {
			tr := trust{proxies: loopbackTrust, forwarded: forwarded}
			got := tr.endUser(peer, lines)
			if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
				t.Fatalf("forwarded=%v %q: answer %v", forwarded, header, got)
			}
			if got == peer || tr.trusted(got) {
				continue
			}
			if again := tr.endUser(peer, append([]string{spoof}, lines...)); again != got {
				t.Fatalf("forwarded=%v %q: %v, but %v after a line %q before it", forwarded, header, got, again, spoof)
			}
		}
	})
}
