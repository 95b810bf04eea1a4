package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// source is a Source with fixed answers; Reload counts its calls.
type source struct {
	ready, started bool
	reloads        int
}

func (s *source) Ready() (bool, []string) {
	if s.ready {
		return true, nil
	}
	return false, []string{`cluster "db": no healthy endpoint (10.0.0.1:5432 unhealthy)`}
}
func (s *source) Started() bool               { return s.started }
func (s *source) ConfigYAML() ([]byte, error) { return []byte("secret: x\n"), nil }
func (s *source) Status() any                 { return map[string]string{"secret": "x"} }
func (s *source) Reload() error               { s.reloads++; return nil }

// TestProbeHandler: the probe mux answers the three probes and nothing
// else, changes nothing, and tells no reasons.
func TestProbeHandler(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		ready, started     bool
		code               int
		body               string
	}{
		{"health", "GET", "/health", false, false, 200, "ok\n"},
		{"ready", "GET", "/ready", true, true, 200, "ready\n"},
		{"not ready", "GET", "/ready", false, true, 503, "not ready\n"},
		{"head ready", "HEAD", "/ready", true, true, 200, "ready\n"}, // the server, not the recorder, drops a HEAD body
		{"started", "GET", "/started", true, true, 200, "started\n"},
		{"not started", "GET", "/started", false, false, 503, "not started\n"},
		{"reload", "POST", "/reload", true, true, 404, "404 page not found\n"},
		{"post ready", "POST", "/ready", true, true, 405, "Method Not Allowed\n"},
		{"delete health", "DELETE", "/health", true, true, 405, "Method Not Allowed\n"},
		{"config", "GET", "/config", true, true, 404, "404 page not found\n"},
		{"status", "GET", "/status", true, true, 404, "404 page not found\n"},
		{"metrics", "GET", "/metrics", true, true, 404, "404 page not found\n"},
		{"index", "GET", "/", true, true, 404, "404 page not found\n"},
		{"ready subpath", "GET", "/ready/x", true, true, 404, "404 page not found\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &source{ready: tc.ready, started: tc.started}
			w := httptest.NewRecorder()
			ProbeHandler(src).ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
			if w.Code != tc.code || w.Body.String() != tc.body {
				t.Errorf("%s %s: got %d %q, want %d %q", tc.method, tc.path, w.Code, w.Body.String(), tc.code, tc.body)
			}
			if src.reloads != 0 {
				t.Errorf("%s %s: got %d reloads, want 0", tc.method, tc.path, src.reloads)
			}
		})
	}
}

// TestAdminReadyNamesReasons: the admin server's /ready keeps its reasons
// and has /started.
func TestAdminReadyNamesReasons(t *testing.T) {
	h := Handler(&source{started: true}, prometheus.NewRegistry())
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/ready", nil))
	if want := "not ready:\ncluster \"db\": no healthy endpoint (10.0.0.1:5432 unhealthy)\n"; w.Code != http.StatusServiceUnavailable || w.Body.String() != want {
		t.Errorf("/ready: got %d %q, want 503 %q", w.Code, w.Body.String(), want)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/started", nil))
	if w.Code != 200 {
		t.Errorf("/started: got %d, want 200", w.Code)
	}
}
