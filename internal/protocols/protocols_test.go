package protocols

import (
	"slices"
	"testing"

	"github.com/attache-proxy/attache/internal/config"
)

// TestListMatchesConfig: every protocol the configuration accepts is
// served, once, and nothing else; each call gives new protocols (they
// hold per-process state).
func TestListMatchesConfig(t *testing.T) {
	var names []string
	for _, p := range New() {
		names = append(names, p.Name())
	}
	if !slices.Equal(names, config.Protocols) {
		t.Errorf("got protocols %q, want config.Protocols %q", names, config.Protocols)
	}
	a, b := New(), New()
	for i := range a {
		if a[i] == b[i] {
			t.Errorf("protocol %s: New returned the same value twice", a[i].Name())
		}
	}
}
