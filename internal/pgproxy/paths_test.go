package pgproxy

import (
	"strings"
	"testing"

	"github.com/attache-proxy/attache/internal/evloop"
)

// onPath gives cfg event loops of the test's own (engine true: the epoll
// engine serves transaction-mode clients, as in production) or none (the
// portable path, goroutines only, as where there is no epoll). A test
// under TestPortablePath takes the portable path whatever it asks.
func onPath(t testing.TB, cfg Config, engine bool) Config {
	if !engine || portableTest(t) {
		cfg.Loops = nil
		return cfg
	}
	if cfg.Loops == nil {
		g := evloop.NewGroup(0)
		t.Cleanup(g.Close) // after the Proxy's Close, which the caller adds later
		cfg.Loops = g
	}
	return cfg
}

func portableTest(t testing.TB) bool { return strings.HasPrefix(t.Name(), "TestPortablePath/") }

// skipOnPortable skips a subtest that the portable run of TestPostgres
// does not need: one that tests nothing the engine serves (session mode,
// TLS clients) or a long run of a client the engine's run covers.
func skipOnPortable(t *testing.T) {
	t.Helper()
	if portableTest(t) {
		t.Skip("covered by the engine's run: the goroutine path serves it there too")
	}
}

// TestPortablePath runs TestPostgres again on the portable path (a Proxy
// without event loops: every client on goroutines, what serves where
// there is no epoll), so that `make test` covers it on Linux too:
// proxying both protocols, prepared statements, session state, errors,
// cancels, waits and pool limits. (TestServerRestartBetweenQueries,
// TestStaleCancel and parts of TestEngine run both paths themselves.)
func TestPortablePath(t *testing.T) {
	t.Run("Postgres", TestPostgres)
}
