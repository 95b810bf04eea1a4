package kubernetes

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/attache-proxy/attache/internal/upstream"
)

// zep is an endpoint in zone with topology hints for zones (none: no
// hints).
func zep(addr, zone string, forZones ...string) Endpoint {
	e := ep(addr, ptr(true), nil, nil)
	if zone != "" {
		e.Zone = ptr(zone)
	}
	if forZones != nil {
		e.Hints = &EndpointHints{}
		for _, z := range forZones {
			e.Hints.ForZones = append(e.Hints.ForZones, ForZone{Name: z})
		}
	}
	return e
}

func TestZoneTargets(t *testing.T) {
	t.Parallel()
	got := Targets([]*EndpointSlice{slice("a", "users", AddressTypeIPv4, httpPort(8080),
		zep("10.0.0.1", "us-east-1a", "us-east-1b", "us-east-1a"),
		zep("10.0.0.2", "us-east-1b", "us-east-1b"),
		zep("10.0.0.3", ""),
		zep("10.0.0.4", "us-east-1c", []string{}...),
	)}, "http")
	want := []upstream.Target{
		{Addr: "10.0.0.1:8080", Weight: 1, Zone: "us-east-1a", Hints: "us-east-1a,us-east-1b"},
		{Addr: "10.0.0.2:8080", Weight: 1, Zone: "us-east-1b", Hints: "us-east-1b"},
		{Addr: "10.0.0.3:8080", Weight: 1},
		{Addr: "10.0.0.4:8080", Weight: 1, Zone: "us-east-1c"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// TestZoneRunFollowsHints: through a client-go fake clientset, zones and
// hints reach the targets, and a change of hints alone (the
// EndpointSlice controller rebalancing) is an update.
func TestZoneRunFollowsHints(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(toAPI(t, slice("users-1", "users", AddressTypeIPv4, httpPort(8080),
		zep("10.0.0.1", "a", "a"), zep("10.0.0.2", "b", "b"))))
	s := &EndpointSlices{ListWatch: fakeScoped(client, "shop", "users"), Namespace: "shop", Service: "users", Port: "http",
		Log: slog.New(slog.DiscardHandler)}
	updates := make(chan []upstream.Target, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, func(ts []upstream.Target) { updates <- ts }); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	expect := func(want ...upstream.Target) {
		t.Helper()
		select {
		case got := <-updates:
			if !slices.Equal(got, want) {
				t.Fatalf("update: got %v, want %v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no update within 10s, want %v", want)
		}
	}
	expect(upstream.Target{Addr: "10.0.0.1:8080", Weight: 1, Zone: "a", Hints: "a"},
		upstream.Target{Addr: "10.0.0.2:8080", Weight: 1, Zone: "b", Hints: "b"})
	_, err := client.DiscoveryV1().EndpointSlices("shop").Update(context.Background(), toAPI(t, slice("users-1", "users", AddressTypeIPv4, httpPort(8080),
		zep("10.0.0.1", "a", "a"), zep("10.0.0.2", "b", "a", "b"))), metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expect(upstream.Target{Addr: "10.0.0.1:8080", Weight: 1, Zone: "a", Hints: "a"},
		upstream.Target{Addr: "10.0.0.2:8080", Weight: 1, Zone: "b", Hints: "a,b"})
}
