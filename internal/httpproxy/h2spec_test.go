package httpproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// h2specSummary is the last line h2spec prints.
var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// TestH2spec runs h2spec (built by tools/build.sh) against a listener in
// the clear (h2c with prior knowledge, through the engine and the fast
// path as a real listener is, and on the net/http path) and over TLS (h2
// by ALPN), each routed to a backend: every test must pass, strict ones
// included, none skipped.
func TestH2spec(t *testing.T) {
	bin := testenv.Tool(t, "h2spec")
	echo := newEcho(t).addr
	p := newProxy(t, true, []string{echo}, Route{})
	tlsAddr := serveTLS(t, p.srv)
	netHTTP := newProxy(t, false, []string{echo}, Route{})
	for _, tc := range []struct {
		name string
		addr string
		args []string
	}{
		{"h2c", p.addr, nil},
		{"h2 over TLS", tlsAddr, []string{"-t", "-k"}},
		{"h2c on the net/http path", netHTTP.addr, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, port, _ := net.SplitHostPort(tc.addr)
			// -S: the strict tests too. -o: the seconds h2spec waits for
			// each expected frame (the machine may be loaded; a passing
			// test never waits it out).
			args := append([]string{"-h", host, "-p", port, "-o", "10", "-S"}, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			m := h2specSummary.FindSubmatch(out)
			if m == nil {
				t.Fatalf("h2spec printed no summary (%v):\n%s", err, out)
			}
			n := func(i int) int { v, _ := strconv.Atoi(string(m[i])); return v }
			if total, passed := n(1), n(2); passed != total || total == 0 || err != nil {
				t.Errorf("h2spec: got %s (%v), want every test passed:\n%s", m[0], err, failures(out))
			}
			t.Logf("h2spec: %s", m[0])
		})
	}
}

// failures is the part of h2spec's output that lists the failed tests.
func failures(out []byte) []byte {
	if i := bytes.Index(out, []byte("Failures:")); i >= 0 {
		return out[i:]
	}
	return out
}

// serveTLS serves s on a TLS listener offering h2 and http/1.1 by ALPN, as
// a listener with tls: does, and returns its address.
func serveTLS(t *testing.T, s *Server) string {
	t.Helper()
	certPEM, keyPEM := testenv.NewCA(t, "h2spec-ca").Issue(t, "127.0.0.1")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	return testenv.Serve(t, cfg, func(c net.Conn) { s.ServeConn(context.Background(), c) })
}
