package app

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// probe sends method path to the probe server through 127.0.0.1 (it is
// bound on every address) and returns code and body.
func (h *harness) probe(method, path string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.probeURL(path), nil)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// probeURL is the URL of path on the probe server, through 127.0.0.1.
func (h *harness) probeURL(path string) string {
	h.t.Helper()
	_, port, err := net.SplitHostPort(h.app.ProbesAddr())
	if err != nil {
		h.t.Fatalf("probe server address %q: %v", h.app.ProbesAddr(), err)
	}
	return "http://127.0.0.1:" + port + path
}

// TestProbeServer: the probe server binds beyond loopback, answers GET and
// HEAD /health, /ready and /started, refuses everything else, tells no
// reasons on /ready, and keeps its address across reloads.
func TestProbeServer(t *testing.T) {
	t.Parallel()
	live, _ := echoServer(t, "live")
	la, lb, dead := testenv.FreePort(t), testenv.FreePort(t), deadAddr(t)
	h := start(t, yamlf(`
probes: {address: "0.0.0.0:0"}
listeners: [{name: a, address: "%s", cluster: up}]
clusters: [{name: up, endpoints: ["%s"]}]
`, la, live), nil)
	if host, _, _ := net.SplitHostPort(h.app.ProbesAddr()); host != "::" && host != "0.0.0.0" {
		t.Fatalf("probe server bound on %q, want every address", h.app.ProbesAddr())
	}
	for _, tc := range []struct {
		name, method, path string
		code               int
		body               string
	}{
		{"health", "GET", "/health", 200, "ok\n"},
		{"ready", "GET", "/ready", 200, "ready\n"},
		{"started", "GET", "/started", 200, "started\n"},
		{"head ready", "HEAD", "/ready", 200, ""},
		{"reload", "POST", "/reload", 404, ""},
		{"post ready", "POST", "/ready", 405, ""},
		{"config", "GET", "/config", 404, ""},
		{"status", "GET", "/status", 404, ""},
		{"metrics", "GET", "/metrics", 404, ""},
		{"index", "GET", "/", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := h.probe(tc.method, tc.path)
			if code != tc.code || (tc.body != "" && body != tc.body) {
				t.Errorf("%s %s: got %d %q, want %d %q", tc.method, tc.path, code, body, tc.code, tc.body)
			}
		})
	}
	big, _ := http.NewRequest("GET", h.probeURL("/health"), nil)
	big.Header.Set("X-Big", strings.Repeat("x", 64<<10))
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(big); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers: got %v, %v; want 431", resp, err)
	} else {
		resp.Body.Close()
	}
	if code, _ := h.admin("GET", "/started"); code != 200 {
		t.Errorf("admin /started: got %d, want 200", code)
	}

	// A reload that moves the probe server and adds a cluster that is
	// down: the server stays where the kubelet probes it and tells "not
	// ready" without naming what.
	was := h.app.ProbesAddr()
	h.rewrite(yamlf(`
probes: {address: "0.0.0.0:1"}
listeners:
  - {name: a, address: "%s", cluster: up}
  - {name: b, address: "%s", cluster: down}
clusters:
  - {name: up, endpoints: ["%s"]}
  - {name: down, endpoints: ["%s"], health_check: {interval: 100ms}}
`, la, lb, live, dead))
	if code, body := h.admin("POST", "/reload"); code != 200 {
		t.Fatalf("reload: got %d %q", code, body)
	}
	if got := h.app.ProbesAddr(); got != was {
		t.Errorf("probe server after reload: got %q, want %q", got, was)
	}
	if !strings.Contains(h.logs.String(), "probes.address changed") {
		t.Errorf("no warning that probes.address moves at the next restart")
	}
	eventually(t, 5*time.Second, "not ready on the probe server", func() bool {
		code, _ := h.probe("GET", "/ready")
		return code == 503
	})
	if code, body := h.probe("GET", "/ready"); code != 503 || body != "not ready\n" {
		t.Errorf("probe /ready: got %d %q, want 503 \"not ready\\n\"", code, body)
	}
	if code, body := h.admin("GET", "/ready"); code != 503 || !strings.Contains(body, `cluster "down"`) {
		t.Errorf("admin /ready: got %d %q, want 503 naming cluster \"down\"", code, body)
	}
}
