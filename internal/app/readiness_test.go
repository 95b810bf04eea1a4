package app

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// noSuchHost resolves localhost and names ending in .test only as
// "no such host", without asking a DNS server.
func noSuchHost(ctx context.Context, host string) ([]string, error) {
	if strings.HasSuffix(host, ".test") {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return net.DefaultResolver.LookupHost(ctx, host)
}

// TestReadyWithoutHealthChecks: with no health check, a cluster that has
// no endpoint it can reach (discovery found none, every endpoint was
// removed, no host name resolves) is not ready; one that has is.
func TestReadyWithoutHealthChecks(t *testing.T) {
	t.Parallel()
	live, _ := echoServer(t, "live")
	_, port, _ := net.SplitHostPort(live)
	empty := filepath.Join(t.TempDir(), "empty.yaml")
	os.WriteFile(empty, []byte("[]\n"), 0o644)
	for _, tc := range []struct {
		name, cluster string
		ready         bool
		reason        string
	}{
		{"discovery found none", "discovery: {file: {path: " + empty + "}}", false, `cluster "c": no endpoints`},
		{"no host name resolves", `endpoints: ["a.test:1", "b.test:2"]`, false, `cluster "c": no endpoint resolves (lookup a.test: no such host; lookup b.test: no such host)`},
		{"one host name resolves", `endpoints: ["a.test:1", "localhost:` + port + `"]`, true, ""},
		{"addresses", `endpoints: ["` + live + `"]`, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := startWith(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", cluster: c}]
clusters: [{name: c, %s}]
`, tc.cluster), nil, Options{lookupHost: noSuchHost})
			eventually(t, 5*time.Second, "/ready to settle", func() bool {
				code, body := h.admin("GET", "/ready")
				return (code == 200) == tc.ready && strings.Contains(body, tc.reason)
			})
			if code, body := h.admin("GET", "/ready"); (code == 200) != tc.ready || !strings.Contains(body, tc.reason) {
				t.Errorf("/ready: got %d %q, want ready %v with %q", code, body, tc.ready, tc.reason)
			}
		})
	}
}

// TestReadyAfterEndpointsRemoved: a cluster whose discovery removes every
// endpoint stops being ready, and is ready again when one comes back.
func TestReadyAfterEndpointsRemoved(t *testing.T) {
	t.Parallel()
	live, _ := echoServer(t, "live")
	file := filepath.Join(t.TempDir(), "eps.yaml")
	os.WriteFile(file, []byte("- "+live+"\n"), 0o644)
	h := start(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", cluster: c}]
clusters: [{name: c, discovery: {file: {path: %s}}}]
`, file), nil)
	h.waitReady()
	os.WriteFile(file, []byte("[]\n"), 0o644)
	eventually(t, 10*time.Second, "not ready with no endpoints", func() bool {
		code, body := h.admin("GET", "/ready")
		return code == 503 && strings.Contains(body, `cluster "c": no endpoints`)
	})
	os.WriteFile(file, []byte("- "+live+"\n"), 0o644)
	h.waitReady()
}

// TestReadyIgnore: a cluster with ready: ignore, or used only by listeners
// with ready: ignore, does not fail /ready; what it misses is a note. A
// cluster a counting listener also uses still counts.
func TestReadyIgnore(t *testing.T) {
	t.Parallel()
	live, _ := echoServer(t, "live")
	for _, tc := range []struct {
		name, listeners, down string
		ready                 bool
	}{
		{"cluster ignore", `[{name: a, address: "127.0.0.1:0", cluster: up}, {name: b, address: "B", cluster: down}]`, ", ready: ignore", true},
		{"listener ignore", `[{name: a, address: "127.0.0.1:0", cluster: up}, {name: b, address: "B", cluster: down, ready: ignore}]`, "", true},
		{"also used by a counting listener", `[{name: a, address: "127.0.0.1:0", cluster: down}, {name: b, address: "B", cluster: down, ready: ignore}]`, "", false},
		{"required", `[{name: a, address: "127.0.0.1:0", cluster: up}, {name: b, address: "B", cluster: down}]`, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := startWith(t, yamlf(`
listeners: %s
clusters:
  - {name: up, endpoints: ["%s"]}
  - {name: down, endpoints: ["down.test:1"]%s}
`, strings.Replace(tc.listeners, "B", testenv.FreePort(t), 1), live, tc.down), nil, Options{lookupHost: noSuchHost})
			eventually(t, 5*time.Second, "the lookup of down.test", func() bool {
				_, body := h.admin("GET", "/ready")
				return strings.Contains(body, `cluster "down": no endpoint resolves`)
			})
			code, body := h.admin("GET", "/ready")
			if (code == 200) != tc.ready {
				t.Errorf("/ready: got %d %q, want ready %v", code, body, tc.ready)
			}
			if tc.ready && !strings.Contains(body, "(ready: ignore)") {
				t.Errorf("/ready: got %q, want the ignored cluster as a note", body)
			}
		})
	}
}
