package protocols

import (
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
	_, err := config.Parse([]byte("listeners:\n  - {name: l, address: \"127.0.0.1:7000\", protocol: memcached, cluster: c}\nclusters: [{name: c, endpoints: [\"h:1\"]}]"), nil, Schemas())
	want := `listeners[0].protocol: unknown protocol "memcached" (line 2); want one of ["tcp" "http" "redis" "postgres"]`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}
