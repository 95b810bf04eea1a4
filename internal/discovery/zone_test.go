package discovery

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/attache-proxy/attache/internal/upstream"
)

// TestZoneConsul: an instance's zone is its service's Locality.Zone
// (Consul 1.17+), else its node's meta key, "zone" unless configured.
func TestZoneConsul(t *testing.T) {
	t.Parallel()
	withMeta := func(e map[string]any, meta map[string]any) map[string]any {
		e["Node"].(map[string]any)["Meta"] = meta
		return e
	}
	withLocality := func(e map[string]any, zone string) map[string]any {
		e["Service"].(map[string]any)["Locality"] = map[string]any{"Region": "us-east-1", "Zone": zone}
		return e
	}
	for _, tc := range []struct {
		name string
		meta string
		want []upstream.Target
	}{
		{"default key", "", []upstream.Target{
			{Addr: "10.0.0.1:8080", Weight: 1, Zone: "us-east-1a"},
			{Addr: "10.0.0.2:8080", Weight: 1, Zone: "us-east-1c"},
			{Addr: "10.0.0.3:8080", Weight: 1}}},
		{"configured key", "az", []upstream.Target{
			{Addr: "10.0.0.1:8080", Weight: 1, Zone: "use1-az1"},
			{Addr: "10.0.0.2:8080", Weight: 1, Zone: "us-east-1c"},
			{Addr: "10.0.0.3:8080", Weight: 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeConsul(t)
			f.set(7, 0,
				withMeta(entry("10.0.0.1", "", 8080, 1), map[string]any{"zone": "us-east-1a", "az": "use1-az1"}),
				withLocality(withMeta(entry("10.0.0.2", "", 8080, 1), map[string]any{"zone": "ignored"}), "us-east-1c"),
				entry("10.0.0.3", "", 8080, 1))
			updates, _ := run(t, &Consul{Address: f.addr(), Service: "orders", ZoneMeta: tc.meta})
			if got := next(t, updates, "first endpoint set"); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestZoneFile(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "eps.yaml")
	os.WriteFile(p, []byte("- 10.0.0.1:443 zone=a\n- 10.0.0.2:443\n"), 0o644)
	updates, _ := runFile(t, p)
	want := []upstream.Target{{Addr: "10.0.0.1:443", Weight: 1, Zone: "a"}, {Addr: "10.0.0.2:443", Weight: 1}}
	if got := next(t, updates, "first set"); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// A changed zone is a change.
	os.WriteFile(p, []byte("- 10.0.0.1:443 zone=b\n- 10.0.0.2:443\n"), 0o644)
	want[0].Zone = "b"
	if got := next(t, updates, "update"); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
