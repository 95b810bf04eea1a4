package httpproxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// TestStickyMovesMinimally: changing a split from 90/10 to 80/20 moves only
// the clients whose bucket changed owner (10% of them), all toward the side
// that grew.
func TestStickyMovesMinimally(t *testing.T) {
	a, b := &Cluster{}, &Cluster{}
	byName := func(n string) *Cluster {
		if n == "a" {
			return a
		}
		return b
	}
	mk := func(wa, wb int) *compiledRoute {
		return compileRoute(Route{Match: RouteMatch{Prefix: "/"}, Sticky: &Sticky{By: "header", Name: "x-user"},
			To: []RouteTarget{{Cluster: "a", Weight: wa}, {Cluster: "b", Weight: wb}}}, byName)
	}
	before, after := mk(90, 10), mk(80, 20)
	const users = 20000
	moved, toB := 0, 0
	for u := 0; u < users; u++ {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-User", fmt.Sprint("user-", u))
		x, y := before.pick(req), after.pick(req)
		if x == b {
			toB++
		}
		if x != y {
			moved++
			if x != a || y != b {
				t.Fatalf("user %d moved from b to a although b grew", u)
			}
		}
	}
	if share := float64(toB) / users; share < 0.08 || share > 0.12 {
		t.Errorf("b share %.3f, want about 0.10", share)
	}
	if share := float64(moved) / users; share < 0.08 || share > 0.12 {
		t.Errorf("moved share %.3f, want about 0.10", share)
	}
}

func TestRouteMatching(t *testing.T) {
	c := &Cluster{}
	one := func(string) *Cluster { return c }
	for _, tc := range []struct {
		name  string
		match RouteMatch
		req   func() *http.Request
		want  bool
	}{
		{"prefix", RouteMatch{Prefix: "/api/"}, func() *http.Request { return httptest.NewRequest("GET", "/api/x", nil) }, true},
		{"prefix miss", RouteMatch{Prefix: "/api/"}, func() *http.Request { return httptest.NewRequest("GET", "/apix", nil) }, false},
		{"regex anchored", RouteMatch{Regex: "/v[0-9]+"}, func() *http.Request { return httptest.NewRequest("GET", "/v12/x", nil) }, false},
		{"method", RouteMatch{Prefix: "/", Methods: []string{"POST"}}, func() *http.Request { return httptest.NewRequest("GET", "/", nil) }, false},
		{"header", RouteMatch{Prefix: "/", Headers: map[string]string{"x-canary": "1"}}, func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-Canary", "1")
			return r
		}, true},
		{"host port ignored", RouteMatch{Prefix: "/", Host: "api.example.com"}, func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Host = "API.example.com:8080"
			return r
		}, true},
		{"wildcard needs a label", RouteMatch{Prefix: "/", Host: "*.example.com"}, func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Host = ".example.com"
			return r
		}, false},
	} {
		rt := compileRoute(Route{Match: tc.match, To: []RouteTarget{{Cluster: "c", Weight: 1}}}, one)
		r := tc.req()
		if got := rt.matches(r.Method, r.URL.Path, r.Host, r.Header); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRetryPolicy(t *testing.T) {
	p := newRetryPolicy(Retries{Attempts: 3, On: []string{"gateway_error", "409"}, Backoff: Backoff{Base: config.Duration(10 * time.Millisecond), Max: config.Duration(40 * time.Millisecond)}})
	for code, want := range map[int]bool{500: false, 502: true, 503: true, 504: true, 409: true, 404: false} {
		if got := p.retriableStatus(code); got != want {
			t.Errorf("status %d: got %v, want %v", code, got, want)
		}
	}
	if !p.retriableError(&connectError{errors.New("refused")}, false) {
		t.Error("connect failure not retriable under gateway_error")
	}
	if p.retriableError(errors.New("reset"), false) {
		t.Error("reset retriable without reset or 5xx")
	}
	for n := 2; n < 8; n++ {
		if d := p.backoff(n); d <= 0 || d > 40*time.Millisecond {
			t.Errorf("backoff(%d) = %v, want in (0, 40ms]", n, d)
		}
	}
	for m, want := range map[string]bool{"GET": true, "PUT": true, "DELETE": true, "POST": false, "PATCH": false} {
		if got := idempotent(m, http.Header{}); got != want {
			t.Errorf("%s idempotent: got %v, want %v", m, got, want)
		}
	}
	r := httptest.NewRequest("POST", "/", nil)
	r.Header.Set("Idempotency-Key", "k1")
	if !idempotent(r.Method, r.Header) {
		t.Error("POST with Idempotency-Key not idempotent")
	}
}

func TestLoopbackHost(t *testing.T) {
	for h, want := range map[string]bool{"localhost:8080": true, "127.0.0.1": true, "[::1]:80": true, "api.example.com": false, "10.0.0.1:80": false} {
		if got := isLoopbackHost(h); got != want {
			t.Errorf("%s: got %v, want %v", h, got, want)
		}
	}
	if got := hostForUpstream("api.example.com:443", "https"); got != "api.example.com" {
		t.Errorf("got %q", got)
	}
	if got := hostForUpstream("[fd00:10:96::1]:443", "https"); got != "[fd00:10:96::1]" {
		t.Errorf("IPv6 on the default port: got %q, want [fd00:10:96::1]", got)
	}
	if got := hostForUpstream("api.example.com:8443", "https"); got != "api.example.com:8443" {
		t.Errorf("got %q", got)
	}
}
