package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDemoOnce runs the demo on free ports and checks what a user reads:
// every request answered, the backend's 503s retried, the stopped backend
// taken out by its health check, the metrics that counted it, and where
// the status page is.
func TestDemoOnce(t *testing.T) {
	var out, errb bytes.Buffer
	err := Run(context.Background(), []string{"demo", "--once", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, &out, &errb)
	s := out.String()
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, s, errb.String())
	}
	t.Logf("demo output:\n%s", s)
	find := func(re string) []string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("output lacks %s:\n%s", re, s)
		}
		return m
	}
	atoi := func(v string) int { n, _ := strconv.Atoi(v); return n }

	// Every request a plain client sent was answered 200.
	res := find(`Result: (\d+) of (\d+) requests answered 200 OK`)
	if answered, sent := atoi(res[1]), atoi(res[2]); answered != sent || sent < 2*demoBatch {
		t.Errorf("%d of %d requests answered, want all of at least %d", answered, sent, 2*demoBatch)
	}
	if m := regexp.MustCompile(`request \d+ failed`).FindString(s); m != "" {
		t.Errorf("output reports a failed request (%q)", m)
	}
	if got := atoi(find(`attache_http_requests_total\{[^}]*code="2xx"[^}]*\} (\d+)`)[1]); got != atoi(res[2]) {
		t.Errorf("attache_http_requests_total 2xx = %d, want %s (every request sent)", got, res[2])
	}
	if m := regexp.MustCompile(`attache_http_requests_total\{[^}]*code="[345]xx"`).FindString(s); m != "" {
		t.Errorf("attache answered something other than 2xx: %s", m)
	}

	// The flaky backend's 503s were hidden by retries, and counted.
	if failed := atoi(find(`backend-a answered 503 (\d+) times`)[1]); failed == 0 {
		t.Errorf("backend-a never failed: the demo shows no retry")
	}
	if retries := atoi(find(`attache_http_retries_total\{cluster="backends"\} (\d+)`)[1]); retries == 0 {
		t.Errorf("attache_http_retries_total is 0")
	}
	if took := atoi(find(`(\d+) answers took more than one try`)[1]); took == 0 {
		t.Errorf("no answer took more than one try (x-attache-attempts)")
	}

	// The stopped backend was taken out by its health check.
	dead := find(`backend-b  (\S+)  will be stopped`)[1]
	if _, _, err := net.SplitHostPort(dead); err != nil {
		t.Fatalf("backend-b's address %q: %v", dead, err)
	}
	find(`backend-b stopped`)
	find(`(/status|/metrics): backend-b unhealthy \d+\.\d+s after the stop`)
	q := regexp.QuoteMeta
	find(`attache_cluster_health_transitions_total\{[^}]*endpoint="` + q(dead) + `",health="unhealthy"\} 1`)
	find(`attache_cluster_endpoint_healthy\{[^}]*endpoint="` + q(dead) + `"\} 0`)

	// Where to look next: the status page on the admin server, and curl.
	admin := find(`Status page: http://(127\.0\.0\.1:\d+)/\n`)[1]
	if admin == "127.0.0.1:0" {
		t.Errorf("status page URL names port 0, not the bound port")
	}
	for _, want := range []string{"curl -s http://" + admin + "/status", "curl -s http://" + admin + "/metrics", "GET http://" + admin + "/metrics"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	find(`curl -si http://127\.0\.0\.1:\d+/ `)
}

// TestDemoAddr: a taken default address falls back to a free port, with a
// note; a taken address the user chose is an error.
func TestDemoAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	var note bytes.Buffer
	if got, err := demoAddr("listener", taken, false, &note); err != nil || got != "127.0.0.1:0" {
		t.Errorf("taken default: got %q, %v; want 127.0.0.1:0", got, err)
	}
	if want := taken + " is in use"; !strings.Contains(note.String(), want) {
		t.Errorf("note %q lacks %q", note.String(), want)
	}
	if _, err := demoAddr("listener", taken, true, io.Discard); err == nil || !strings.Contains(err.Error(), "listener address "+taken) {
		t.Errorf("taken and chosen: got %v, want an error naming the listener address", err)
	}
	if got, err := demoAddr("admin server", "127.0.0.1:0", true, io.Discard); err != nil || got != "127.0.0.1:0" {
		t.Errorf("port 0: got %q, %v", got, err)
	}
}

func TestDemoAdminOff(t *testing.T) {
	var errb bytes.Buffer
	err := Run(context.Background(), []string{"demo", "--once", "--admin", "off"}, io.Discard, &errb)
	if code := ExitCode(err, &errb); code != 2 || !strings.Contains(errb.String(), "--admin off is not supported") {
		t.Errorf("--admin off: exit %d, %q; want 2 and a reason", code, errb.String())
	}
}
