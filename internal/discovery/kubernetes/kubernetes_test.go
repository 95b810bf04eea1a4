package kubernetes

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/attache-proxy/attache/internal/upstream"
)

func ptr[T any](v T) *T { return &v }

// ep is an endpoint with the given conditions (nil: unset).
func ep(addr string, ready, serving, terminating *bool) Endpoint {
	return Endpoint{Addresses: []string{addr},
		Conditions: EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}}
}

func slice(name, service string, at string, ports []EndpointPort, eps ...Endpoint) *EndpointSlice {
	return &EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{
			LabelServiceName: service, discoveryv1.LabelManagedBy: "attache-test"}},
		AddressType: at,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func httpPort(n int32) []EndpointPort {
	return []EndpointPort{{Name: ptr("metrics"), Port: ptr(int32(9090))}, {Name: ptr("http"), Port: ptr(n), Protocol: ptr("TCP")}}
}

func addrs(ts []upstream.Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Addr)
	}
	return out
}

func TestTargets(t *testing.T) {
	t.Parallel()
	yes, no := ptr(true), ptr(false)
	for _, tc := range []struct {
		name   string
		slices []*EndpointSlice
		port   string
		want   []string
	}{
		{"ready only", []*EndpointSlice{slice("a", "users", AddressTypeIPv4, httpPort(8080),
			ep("10.0.0.1", yes, yes, no), ep("10.0.0.2", no, no, no), ep("10.0.0.3", nil, nil, nil))},
			"http", []string{"10.0.0.1:8080", "10.0.0.3:8080"}},
		{"terminating drained even if serving", []*EndpointSlice{slice("a", "users", AddressTypeIPv4, httpPort(8080),
			ep("10.0.0.1", no, yes, yes), ep("10.0.0.2", yes, yes, yes), ep("10.0.0.3", yes, no, nil))},
			"http", nil},
		{"port by number", []*EndpointSlice{slice("a", "users", AddressTypeIPv4, httpPort(8080),
			ep("10.0.0.1", yes, nil, nil))}, "9090", []string{"10.0.0.1:9090"}},
		{"no such port", []*EndpointSlice{slice("a", "users", AddressTypeIPv4, httpPort(8080),
			ep("10.0.0.1", yes, nil, nil))}, "grpc", nil},
		{"udp port not taken", []*EndpointSlice{slice("a", "dns", AddressTypeIPv4,
			[]EndpointPort{{Name: ptr("dns"), Port: ptr(int32(53)), Protocol: ptr("UDP")}},
			ep("10.0.0.1", yes, nil, nil))}, "dns", nil},
		{"unnamed port by number", []*EndpointSlice{slice("a", "users", AddressTypeIPv4,
			[]EndpointPort{{Port: ptr(int32(8080))}}, ep("10.0.0.1", yes, nil, nil))}, "8080", []string{"10.0.0.1:8080"}},
		{"slices merged, ports per slice, duplicates dropped", []*EndpointSlice{
			slice("a", "users", AddressTypeIPv4, httpPort(8080), ep("10.0.0.2", yes, nil, nil), ep("10.0.0.1", yes, nil, nil)),
			slice("b", "users", AddressTypeIPv4, httpPort(8081), ep("10.0.0.3", yes, nil, nil)),
			slice("c", "users", AddressTypeIPv4, httpPort(8080), ep("10.0.0.1", yes, nil, nil)),
		}, "http", []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8081"}},
		{"ipv6 and dual stack", []*EndpointSlice{
			slice("v4", "users", AddressTypeIPv4, httpPort(8080), ep("10.0.0.1", yes, nil, nil)),
			slice("v6", "users", AddressTypeIPv6, httpPort(8080), ep("fd00::0001", yes, nil, nil)),
		}, "http", []string{"10.0.0.1:8080", "[fd00::1]:8080"}},
		{"fqdn and bad addresses skipped", []*EndpointSlice{
			slice("f", "users", AddressTypeFQDN, httpPort(8080), ep("users.example.com", yes, nil, nil)),
			slice("v4", "users", AddressTypeIPv4, httpPort(8080), ep("not-an-ip", yes, nil, nil), Endpoint{}),
		}, "http", nil},
		{"first address only", []*EndpointSlice{slice("a", "users", AddressTypeIPv4, httpPort(8080),
			Endpoint{Addresses: []string{"10.0.0.1", "10.0.0.9"}})}, "http", []string{"10.0.0.1:8080"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := addrs(Targets(tc.slices, tc.port)); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// viaJSON decodes the JSON of in into a new Out, as the REST client would
// decode the API server's answer.
func viaJSON[Out any](in any) (*Out, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	out := new(Out)
	return out, json.Unmarshal(b, out)
}

// toAPI is es as the k8s.io/api type the fake clientset stores.
func toAPI(t *testing.T, es *EndpointSlice) *discoveryv1.EndpointSlice {
	t.Helper()
	out, err := viaJSON[discoveryv1.EndpointSlice](es)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fakeScoped is Scoped over a fake clientset: the fake's k8s.io/api objects
// are turned into this package's types through JSON.
func fakeScoped(client *fake.Clientset, namespace, service string) cache.ListerWatcher {
	scope := func(o metav1.ListOptions) metav1.ListOptions {
		o.LabelSelector = LabelServiceName + "=" + service
		return o
	}
	es := client.DiscoveryV1().EndpointSlices(namespace)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			l, err := es.List(ctx, scope(o))
			if err != nil {
				return nil, err
			}
			return viaJSON[EndpointSliceList](l)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			w, err := es.Watch(ctx, scope(o))
			if err != nil {
				return nil, err
			}
			return watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
				if api, ok := e.Object.(*discoveryv1.EndpointSlice); ok {
					o, err := viaJSON[EndpointSlice](api)
					if err != nil {
						return watch.Event{Type: watch.Error, Object: &metav1.Status{Message: err.Error()}}, true
					}
					e.Object = o
				}
				return e, true
			}), nil
		},
	}
}

// run starts discovery and returns the channel of updates.
func run(t *testing.T, s *EndpointSlices) <-chan []string {
	t.Helper()
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	updates := make(chan []string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, func(ts []upstream.Target) { updates <- addrs(ts) }); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return updates
}

func next(t *testing.T, updates <-chan []string, want ...string) {
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

func TestRunFollowsTheServicesSlicesOnly(t *testing.T) {
	t.Parallel()
	yes, no := ptr(true), ptr(false)
	client := fake.NewClientset(
		toAPI(t, slice("users-1", "users", AddressTypeIPv4, httpPort(8080), ep("10.0.0.1", yes, nil, nil))),
		toAPI(t, slice("orders-1", "orders", AddressTypeIPv4, httpPort(8080), ep("10.9.0.1", yes, nil, nil))),
	)
	other := slice("users-1", "users", AddressTypeIPv4, httpPort(8080), ep("10.8.0.1", yes, nil, nil))
	other.Namespace = "elsewhere"
	ctx := context.Background()
	client.DiscoveryV1().EndpointSlices("elsewhere").Create(ctx, toAPI(t, other), metav1.CreateOptions{})

	updates := run(t, &EndpointSlices{ListWatch: fakeScoped(client, "shop", "users"), Namespace: "shop", Service: "users", Port: "http"})
	next(t, updates, "10.0.0.1:8080")

	es := client.DiscoveryV1().EndpointSlices("shop")
	es.Create(ctx, toAPI(t, slice("users-2", "users", AddressTypeIPv4, httpPort(8080), ep("10.0.0.2", yes, nil, nil))), metav1.CreateOptions{})
	next(t, updates, "10.0.0.1:8080", "10.0.0.2:8080")

	es.Update(ctx, toAPI(t, slice("users-2", "users", AddressTypeIPv4, httpPort(8080), ep("10.0.0.2", no, yes, yes))), metav1.UpdateOptions{})
	next(t, updates, "10.0.0.1:8080")

	// A change that leaves the set as it was reports nothing; the next
	// real change shows that nothing was queued in between.
	es.Update(ctx, toAPI(t, slice("users-2", "users", AddressTypeIPv4, httpPort(8080), ep("10.0.0.2", no, no, yes))), metav1.UpdateOptions{})
	client.DiscoveryV1().EndpointSlices("shop").Create(ctx, toAPI(t, slice("orders-2", "orders", AddressTypeIPv4, httpPort(8080), ep("10.9.0.2", yes, nil, nil))), metav1.CreateOptions{})
	es.Delete(ctx, "users-1", metav1.DeleteOptions{})
	next(t, updates)
	select {
	case got := <-updates:
		t.Fatalf("unexpected update %v", got)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestRunReportsAnEmptyServiceOnceSynced(t *testing.T) {
	t.Parallel()
	updates := run(t, &EndpointSlices{ListWatch: fakeScoped(fake.NewClientset(), "shop", "users"), Namespace: "shop", Service: "users", Port: "http"})
	next(t, updates)
}
