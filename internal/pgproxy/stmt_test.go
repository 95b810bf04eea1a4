package pgproxy

import (
	"fmt"
	"strings"
	"testing"
)

// TestRegistryBounded: the interned statement texts stay within the
// registry's bound however many distinct texts clients send, and a
// statement handed out keeps its name; before, every text was kept for
// the life of the Proxy.
func TestRegistryBounded(t *testing.T) {
	t.Parallel()
	r := registry{byText: map[stmtKey]*stmt{}, maxBytes: 10 << 10}
	first := r.get("SELECT 1", nil)
	if again := r.get("SELECT 1", nil); again != first {
		t.Fatalf("got %s for the same text, want %s", again.name, first.name)
	}
	text := strings.Repeat("x", 1000)
	for i := range 100 {
		r.get(fmt.Sprintf("SELECT '%s%d'", text, i), []uint32{23})
		if r.bytes > r.maxBytes {
			t.Fatalf("after %d texts: got %d bytes interned, want at most %d", i+1, r.bytes, r.maxBytes)
		}
	}
	if first.name != "attache_1" || first.query != "SELECT 1" {
		t.Errorf("got %s %q, want the statement handed out unchanged", first.name, first.query)
	}
	if again := r.get("SELECT 1", nil); again.name == first.name {
		t.Errorf("got %s again after the registry started over, want a new name", again.name)
	}
}
