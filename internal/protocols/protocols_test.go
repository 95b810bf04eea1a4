package protocols

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attache-proxy/attache/internal/config"
)

// TestNew: each call gives new protocols (they hold per-process state),
// with distinct names.
func TestNew(t *testing.T) {
	a, b := New(), New()
	seen := map[string]bool{}
	for i := range a {
		if a[i] == b[i] {
			t.Errorf("protocol %s: New returned the same value twice", a[i].Name())
		}
		if seen[a[i].Name()] {
			t.Errorf("protocol %s listed twice", a[i].Name())
		}
		seen[a[i].Name()] = true
	}
}

// TestUnknownProtocol: a listener naming a protocol that is not listed
// is refused with the names that are.
func TestUnknownProtocol(t *testing.T) {
	_, err := config.Parse([]byte("listeners:\n  - {name: l, address: \"127.0.0.1:7000\", protocol: kafka, cluster: c}\nclusters: [{name: c, endpoints: [\"h:1\"]}]"), nil, Schemas())
	want := `listeners[0].protocol: unknown protocol "kafka" (line 2); want one of ["tcp" "http" "redis" "postgres" "memcached"]`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// TestRenderedConfigLoads: the configuration as /config renders it
// (defaults filled in, secrets redacted) loads again with every
// protocol's options, on listeners and clusters.
func TestRenderedConfigLoads(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(users, []byte("\"u\" \"p\"\n"), 0o600)
	c, err := config.Parse([]byte(`
listeners:
  - {name: t, address: "127.0.0.1:7000", cluster: tc}
  - {name: h, address: "127.0.0.1:7001", protocol: http, cluster: hc}
  - {name: r, address: "127.0.0.1:7002", protocol: redis, cluster: rc, redis: {password: s3cret}}
  - {name: p, address: "127.0.0.1:7003", protocol: postgres, cluster: pc, postgres: {auth: {users_file: `+users+`}, pool_mode: transaction}}
clusters:
  - {name: tc, endpoints: ["h:1"], health_check: {type: redis}, redis: {password: x}}
  - {name: hc, endpoints: ["h:2"], circuit_breaker: {}, health_check: {type: http}}
  - {name: rc, endpoints: ["h:3"], redis: {distribution: modula}}
  - {name: pc, endpoints: ["h:4"], health_check: {type: postgres, user: u}, postgres: {server_lifetime: 10m}}
`), nil, Schemas())
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.MarshalRedacted()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Errorf("/config shows a password:\n%s", out)
	}
	for _, want := range []string{"pool_mode: transaction", "server_lifetime: 10m0s", "distribution: modula"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rendered config lacks %q:\n%s", want, out)
		}
	}
	if _, err := config.Parse(out, nil, Schemas()); err != nil {
		t.Errorf("the rendered config does not load again: %v\n%s", err, out)
	}
}
