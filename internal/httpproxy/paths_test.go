package httpproxy

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/evloop"
)

// wirePath is the way a test's Server serves cleartext HTTP/1.1.
type wirePath string

const (
	// onEngine: the event-loop engine on loops of the test's own (the
	// goroutine fast path where there is no epoll), as in production.
	onEngine wirePath = "engine"
	// onGoroutine: the portable path, the goroutine fast path alone (a
	// Server without loops, as on systems without epoll).
	onGoroutine wirePath = "goroutine"
	// onNetHTTP: net/http for everything (ATTACHE_HTTP_FAST_PATH=off).
	onNetHTTP wirePath = "net/http"
)

// newTestServer starts a Server on path, closed when the test ends.
func newTestServer(t testing.TB, idle time.Duration, path wirePath, log *slog.Logger) *Server {
	t.Helper()
	o := ServerOptions{IdleTimeout: idle, NetHTTP: path == onNetHTTP, Log: log}
	if path == onEngine {
		g := evloop.NewGroup(0)
		t.Cleanup(g.Close) // after the Server's own cleanup, which the caller adds later
		o.Loops = g
	}
	return NewServer(o)
}

// fastPathOf is the path a test of the fast path runs on: the engine,
// or the goroutine fast path alone under TestPortablePath.
func fastPathOf(t testing.TB) wirePath {
	if strings.HasPrefix(t.Name(), "TestPortablePath/") {
		return onGoroutine
	}
	return onEngine
}

// TestPortablePath runs the behavioural tests of the fast path again on
// the portable path (a Server without event loops: the goroutine fast
// path alone, what serves where there is no epoll), so that `make test`
// covers it on Linux too: proxying and framing, hand-offs, upstream
// reuse and errors, timeouts, drain and limits. (TestLimitsAlone,
// TestRetryLimitsAlone, TestGracefulShutdownLosesNothing,
// TestPooledCloseBeforeAnswer and TestIdleBudgetShared run every path
// themselves.)
func TestPortablePath(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"FastSmuggling", TestFastSmuggling},
		{"FastChunkedBothWays", TestFastChunkedBothWays},
		{"FastPipelined", TestFastPipelined},
		{"Fast100Continue", TestFast100Continue},
		{"FastNoBodyResponses", TestFastNoBodyResponses},
		{"FastHandOff", TestFastHandOff},
		{"FastUpstreamReuse", TestFastUpstreamReuse},
		{"FastStaleUpstreamRetried", TestFastStaleUpstreamRetried},
		{"FastHeadersAndForwarding", TestFastHeadersAndForwarding},
		{"FastAllocs", TestFastAllocs},
		{"FastAccessLog", TestFastAccessLog},
		{"FastLargeBodies", TestFastLargeBodies},
		{"EngineBackendResetMidResponse", TestEngineBackendResetMidResponse},
		{"EngineLargeAndSlowReader", TestEngineLargeAndSlowReader},
		{"EngineTimeouts", TestEngineTimeouts},
		{"EngineDrain", TestEngineDrain},
		{"EngineConnectFailureAndNames", TestEngineConnectFailureAndNames},
		{"FramingBeforeHandOff", TestFramingBeforeHandOff},
		{"HandOffStillServed", TestHandOffStillServed},
		{"TLSDrainClosesIdle", TestTLSDrainClosesIdle},
	} {
		t.Run(tc.name, tc.f)
	}
}

// TestNetHTTPOnlyEnv: ATTACHE_HTTP_FAST_PATH is off or nothing; the
// value that chose the goroutine path says what took its place.
func TestNetHTTPOnlyEnv(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
		err  string
	}{
		{nil, false, ""},
		{map[string]string{"ATTACHE_HTTP_FAST_PATH": ""}, false, ""},
		{map[string]string{"ATTACHE_HTTP_FAST_PATH": "off"}, true, ""},
		{map[string]string{"ATTACHE_HTTP_FAST_PATH": "goroutine"}, false, "ATTACHE_HTTP_FAST_PATH=goroutine: no longer read; set ATTACHE_EVENT_LOOPS=off to serve every protocol without event loops"},
		{map[string]string{"ATTACHE_HTTP_FAST_PATH": "on"}, false, `ATTACHE_HTTP_FAST_PATH="on": want off (net/http serves every connection) or nothing`},
	} {
		got, err := netHTTPOnly(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
		if got != tc.want || fmt.Sprint(err) != tc.err && !(err == nil && tc.err == "") {
			t.Errorf("%v: got %v, %v; want %v, %q", tc.env, got, err, tc.want, tc.err)
		}
	}
}
