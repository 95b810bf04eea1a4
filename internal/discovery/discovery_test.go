package discovery

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/upstream"
)

type fakeResolver struct {
	mu    sync.Mutex
	hosts map[string][]string
	srv   []*net.SRV
	err   error
}

func (f *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return f.hosts[host], nil
}

func (f *fakeResolver) LookupSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return "", f.srv, f.err
}

func (f *fakeResolver) set(host string, ips []string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts[host], f.err = ips, err
}

func TestDNSFollowsChangesAndKeepsLastOnError(t *testing.T) {
	r := &fakeResolver{hosts: map[string][]string{"redis": {"10.0.0.2", "10.0.0.1"}}}
	d := &DNS{Name: "redis", Port: 6379, Refresh: 10 * time.Millisecond, Resolver: r, Log: slog.New(slog.DiscardHandler)}
	updates := make(chan []upstream.Target, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx, func(ts []upstream.Target) { updates <- ts })

	want := []upstream.Target{{Addr: "10.0.0.1:6379", Weight: 1}, {Addr: "10.0.0.2:6379", Weight: 1}}
	if got := <-updates; !slices.Equal(got, want) {
		t.Fatalf("first set: got %v, want %v", got, want)
	}
	r.set("redis", nil, errors.New("SERVFAIL"))
	time.Sleep(50 * time.Millisecond)
	select {
	case got := <-updates:
		t.Fatalf("lookup error replaced the set with %v", got)
	default:
	}
	r.set("redis", []string{"10.0.0.3"}, nil)
	if got := <-updates; !slices.Equal(got, []upstream.Target{{Addr: "10.0.0.3:6379", Weight: 1}}) {
		t.Fatalf("changed set: got %v", got)
	}
}

func TestDNSSRV(t *testing.T) {
	r := &fakeResolver{
		hosts: map[string][]string{"a.svc.": {"10.0.0.1"}, "b.svc.": {"::1"}},
		srv:   []*net.SRV{{Target: "a.svc.", Port: 7000, Weight: 3}, {Target: "b.svc.", Port: 7001, Weight: 0}},
	}
	d := &DNS{SRV: "_redis._tcp.svc", Resolver: r}
	got, err := d.lookup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []upstream.Target{{Addr: "10.0.0.1:7000", Weight: 3}, {Addr: "[::1]:7001", Weight: 1}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestDNSRealResolverLocalhost(t *testing.T) {
	d := &DNS{Name: "localhost", Port: 80, Resolver: net.DefaultResolver}
	got, err := d.lookup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(got, func(t upstream.Target) bool { return t.Addr == "127.0.0.1:80" || t.Addr == "[::1]:80" }) {
		t.Errorf("got %v, want a loopback address", got)
	}
}

// TestDNSChangeKeepsEndpointState: a DNS change goes through
// Cluster.SetEndpoints, which keeps the endpoints that remain, with their
// health, by address.
func TestDNSChangeKeepsEndpointState(t *testing.T) {
	r := &fakeResolver{hosts: map[string][]string{"redis": {"10.0.0.1"}}}
	d := &DNS{Name: "redis", Port: 6379, Refresh: 10 * time.Millisecond, Resolver: r, Log: slog.New(slog.DiscardHandler)}
	p, _ := balance.New("round_robin")
	c := upstream.New(upstream.Options{Name: "c", Picker: p, ConnectTimeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates := make(chan struct{}, 10)
	go d.Run(ctx, func(ts []upstream.Target) { c.SetEndpoints(ts); updates <- struct{}{} })
	<-updates
	a := c.Endpoints()[0]
	a.ObserveCheck(false, upstream.Thresholds{Healthy: 1, Unhealthy: 1})
	r.set("redis", []string{"10.0.0.2", "10.0.0.1"}, nil)
	<-updates
	eps := c.Endpoints()
	if len(eps) != 2 || eps[0] != a || eps[0].Health() != upstream.Unhealthy {
		t.Fatalf("after the change: got %v, want 10.0.0.1 kept (same endpoint, unhealthy) and 10.0.0.2 added", eps)
	}
}
