package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
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

// pageSource is a Source whose Status has the shape of app.Status.
type pageSource struct{ source }

func (pageSource) Status() any {
	return map[string]any{
		"ready": false, "not_ready": []string{`cluster "db": no healthy endpoint`}, "loaded_at": "2026-01-02T03:04:05Z",
		"listeners": []map[string]any{
			{"name": "web<script>alert(1)</script>", "address": "127.0.0.1:8080", "protocol": "http", "cluster": "api", "tls": true, "active_connections": 3},
			{"name": "pg", "address": "127.0.0.1:6432", "protocol": "postgres", "cluster": "db", "tls": false, "active_connections": 0,
				"postgres_pools": []map[string]any{{"database": "app", "user": "alice", "cl_active": 4, "cl_waiting": 2, "sv_active": 1, "sv_idle": 5, "sv_open": 6, "maxwait_seconds": 1.5}}},
		},
		"clusters": []map[string]any{
			{"name": "api", "balance": "ewma", "circuit_breaker": "open", "endpoints": []map[string]any{
				{"address": "10.0.0.1:80", "weight": 1, "state": "ejected", "active_connections": 0, "latency_estimate_seconds": 0.012345}}},
			{"name": "db", "balance": "round_robin", "endpoints": []map[string]any{
				{"address": "10.0.0.2:5432", "weight": 1, "state": "healthy", "role": "standby", "replication_lag_seconds": 0.25, "active_connections": 1}}},
			{"name": "cache", "balance": "ketama", "endpoints": []map[string]any{},
				"redis_shards": []map[string]any{{"address": "10.0.0.3:6379", "name": "shard-a", "connections": 7, "ejected": true}}},
		},
		"certificates": []map[string]any{{"owner": "listener web", "file": "/etc/tls/web.crt", "not_after": "2027-05-06T07:08:09Z"}},
		"reloads": []map[string]any{
			{"at": "2026-01-02T03:05:00Z", "ok": false, "error": `cluster "x": unknown <b>field</b>`},
			{"at": "2026-01-02T03:04:05Z", "ok": true},
		},
	}
}

// TestStatusPage: GET / renders every part of the status snapshot as
// HTML, escaped, refreshing itself, with no script.
func TestStatusPage(t *testing.T) {
	w := httptest.NewRecorder()
	Handler(&pageSource{}, prometheus.NewRegistry()).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	body := w.Body.String()
	if ct := w.Header().Get("Content-Type"); w.Code != 200 || ct != "text/html; charset=utf-8" {
		t.Fatalf("GET /: got %d %q, want 200 text/html", w.Code, ct)
	}
	for _, tc := range []struct{ name, want string }{
		{"refresh", `<meta http-equiv="refresh" content="5">`},
		{"not ready", `cluster &#34;db&#34;: no healthy endpoint`},
		{"escaped listener", `web&lt;script&gt;alert(1)&lt;/script&gt;`},
		{"listener address", `127.0.0.1:6432`},
		{"pool", `<td>app</td><td>alice</td><td>4</td><td>2</td><td>1</td><td>5</td><td>6</td><td>1.5</td>`},
		{"breaker", `breaker <span class="bad">open</span>`},
		{"ejected endpoint", `<td class="bad">ejected</td>`},
		{"latency estimate", `<td>0</td><td>0.012345</td>`},
		{"healthy endpoint", `<td class="ok">healthy</td><td>standby</td><td>0.25</td>`},
		{"shard", `<td>shard-a</td><td>10.0.0.3:6379</td><td>7</td><td><span class="bad">ejected</span></td>`},
		{"certificate", `<td>listener web</td><td>/etc/tls/web.crt</td><td>2027-05-06T07:08:09Z</td>`},
		{"reload error", `failed: cluster &#34;x&#34;: unknown &lt;b&gt;field&lt;/b&gt;`},
		{"reload ok", `<span class="ok">ok</span>`},
	} {
		if !strings.Contains(body, tc.want) {
			t.Errorf("%s: %q missing from\n%s", tc.name, tc.want, body)
		}
	}
	for _, bad := range []string{"<script", "<b>", "<no value>"} {
		if strings.Contains(body, bad) {
			t.Errorf("got %q in the page, want none", bad)
		}
	}
}
