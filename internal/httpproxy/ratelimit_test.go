package httpproxy

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// TestRateLimitClaimKey: a route keyed on a JWT claim gives each value of
// the claim its own bucket; requests without the claim (no verified
// token, a missing, empty or non-scalar claim) share one.
func TestRateLimitClaimKey(t *testing.T) {
	t.Parallel()
	l := compileLimit("r", &RateLimit{Requests: 1, Per: config.Duration(time.Hour), Burst: 1,
		Key: &RateLimitKey{Claim: "sub"}, MaxKeys: 10, Headers: "limited"})
	if l.fast() {
		t.Fatal("a claim key on the fast path: claims are only in net/http's request context")
	}
	now := int64(time.Hour)
	req := func(claims map[string]any) bool {
		r := httptest.NewRequest("GET", "/", nil)
		if claims != nil {
			r = withClaims(r, claims)
		}
		return l.decide(r, now).OK
	}
	for _, c := range []struct {
		name   string
		claims map[string]any
		want   bool
	}{
		{"alice", map[string]any{"sub": "alice"}, true},
		{"alice again", map[string]any{"sub": "alice", "aud": "x"}, false},
		{"bob", map[string]any{"sub": "bob"}, true},
		{"number", map[string]any{"sub": float64(42)}, true},
		{"number again", map[string]any{"sub": json.Number("42")}, false},
		{"no token", nil, true}, // the shared bucket's one token
		{"no claim", map[string]any{"aud": "x"}, false},
		{"empty claim", map[string]any{"sub": ""}, false},
		{"array claim", map[string]any{"sub": []any{"a"}}, false},
	} {
		if got := req(c.claims); got != c.want {
			t.Errorf("%s: allowed %v, want %v", c.name, got, c.want)
		}
	}
}

// TestRateLimitNestedClaimKey: a claim key names a nested claim with a
// dotted path, as forward_claims does ("tenant.id"): each tenant gets a
// bucket of its own, rather than every request the shared one.
func TestRateLimitNestedClaimKey(t *testing.T) {
	t.Parallel()
	l := compileLimit("r", &RateLimit{Requests: 1, Per: config.Duration(time.Hour), Burst: 1,
		Key: &RateLimitKey{Claim: "tenant.id"}, MaxKeys: 10, Headers: "limited"})
	now := int64(time.Hour)
	for _, c := range []struct {
		name   string
		claims map[string]any
		want   bool
	}{
		{"alice of t1", map[string]any{"sub": "alice", "tenant": map[string]any{"id": "t1"}}, true},
		{"bob of t1", map[string]any{"sub": "bob", "tenant": map[string]any{"id": "t1"}}, false},
		{"carol of t2", map[string]any{"sub": "carol", "tenant": map[string]any{"id": "t2"}}, true},
		{"a top-level dotted name", map[string]any{"tenant.id": "t3"}, true},
		{"no tenant", map[string]any{"sub": "dave"}, true}, // the shared bucket's one token
		{"tenant not an object", map[string]any{"tenant": "t1"}, false},
	} {
		if got := l.decide(withClaims(httptest.NewRequest("GET", "/", nil), c.claims), now).OK; got != c.want {
			t.Errorf("%s: allowed %v, want %v", c.name, got, c.want)
		}
	}
}

// TestRateLimitPathsAgree: the fast paths and net/http key a request the
// same way.
func TestRateLimitPathsAgree(t *testing.T) {
	t.Parallel()
	for _, key := range []*RateLimitKey{
		{Header: "x-api-key"},
		{EndUser: true, TrustedProxies: DefaultTrustedProxies(), ForwardedHeader: "x-forwarded-for"},
	} {
		mk := func() *routeLimit {
			return compileLimit("r", &RateLimit{Requests: 1, Per: config.Duration(time.Hour), Burst: 1, Key: key, MaxKeys: 10})
		}
		std, fast := mk(), mk()
		fast.l = std.l // one limiter: a token taken by one path is gone for the other
		for _, v := range []string{"198.51.100.7", "203.0.113.1, 198.51.100.8", "10.0.0.1"} {
			head := "GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + v + "\r\nX-Forwarded-For: " + v + "\r\n"
			var h reqHead
			if verdict, why := h.parse(head); verdict == reject {
				t.Fatalf("parse: %s", why)
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "127.0.0.1:5000"
			r.Header.Set("X-Api-Key", v)
			r.Header.Set("X-Forwarded-For", v)
			if !std.decide(r, 1).OK {
				t.Fatalf("%+v %q: first on net/http refused", key, v)
			}
			if fast.decideHead(&h, netip.MustParseAddr("127.0.0.1"), 1).OK {
				t.Errorf("%+v %q: the fast path took another bucket than net/http", key, v)
			}
		}
	}
}

// TestRateLimitAllocs: a limited route's check on the fast paths
// allocates nothing, keyed or not, allowed or refused.
func TestRateLimitAllocs(t *testing.T) {
	for _, key := range []*RateLimitKey{
		nil,
		{Header: "x-api-key"},
		{EndUser: true, TrustedProxies: DefaultTrustedProxies(), ForwardedHeader: "x-forwarded-for"},
	} {
		max := 0
		if key != nil {
			max = 10
		}
		l := compileLimit("r", &RateLimit{Requests: 1, Per: config.Duration(time.Hour), Burst: 1, Key: key, MaxKeys: max})
		var h reqHead
		h.parse("GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: k1\r\nX-Forwarded-For: 198.51.100.7\r\n")
		peer := netip.MustParseAddr("127.0.0.1")
		buf := make([]byte, 0, 1024)
		n := testing.AllocsPerRun(100, func() {
			d := l.decideHead(&h, peer, 1)
			buf = l.appendLimited(buf[:0], d, false, false, false, "x")
		})
		if n != 0 {
			t.Errorf("%+v: %v allocations per request, want 0", key, n)
		}
	}
}

func TestSFString(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{`web/0`: `"web/0"`, `a"b\c`: `"a\"b\\c"`, "é\x01": `"???"`} {
		if got := sfString(in); got != want {
			t.Errorf("sfString(%q): got %s, want %s", in, got, want)
		}
	}
}

// FuzzRateLimitKey: whatever a client writes in the key header and the
// forwarded header, the fast paths and net/http (its own parser) put the
// request in the same bucket, and nothing panics.
func FuzzRateLimitKey(f *testing.F) {
	for _, s := range []string{"k1", "198.51.100.7", "203.0.113.1, 198.51.100.7", " padded ", "unknown", "[2001:db8::7]:443", ""} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, key, xff string) {
		head := "GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + key + "\r\nX-Forwarded-For: " + xff + "\r\n"
		var h reqHead
		if v, _ := h.parse(head); v != serveFast {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head + "\r\n")))
		if err != nil {
			return
		}
		r.RemoteAddr = "127.0.0.1:5000"
		for _, k := range []*RateLimitKey{
			{Header: "x-api-key"},
			{EndUser: true, TrustedProxies: DefaultTrustedProxies(), ForwardedHeader: "x-forwarded-for"},
		} {
			l := compileLimit("r", &RateLimit{Requests: 1, Per: config.Duration(time.Hour), Burst: 1, Key: k, MaxKeys: 10})
			if !l.decide(r, 1).OK {
				t.Fatal("first request refused")
			}
			if l.decideHead(&h, netip.MustParseAddr("127.0.0.1"), 1).OK {
				t.Fatalf("%+v: key %q xff %q: the fast path and net/http took different buckets", k, key, xff)
			}
		}
	})
}

// TestEngineRateLimit: a route limited by a header key is served in the
// engine, 429s included (pipelined, with bodies, HEAD without one), and
// the connection stays in the engine; a route keyed on a claim is not.
func TestEngineRateLimit(t *testing.T) {
	engineOnly(t)
	b := newEcho(t)
	p := newProxy(t, true, []string{b.addr}, Route{RateLimit: &RateLimit{Requests: 1, Per: config.Duration(time.Hour), Burst: 1,
		Key: &RateLimitKey{Header: "x-api-key"}, MaxKeys: 10, Headers: "limited"}})
	c, br := raw(t, p.addr, "POST /a HTTP/1.1\r\nHost: a\r\nX-Api-Key: k1\r\nContent-Length: 3\r\n\r\nabc"+
		"POST /b HTTP/1.1\r\nHost: a\r\nX-Api-Key: k1\r\nContent-Length: 3\r\n\r\ndef"+
		"HEAD /c HTTP/1.1\r\nHost: a\r\nX-Api-Key: k1\r\n\r\n"+
		"GET /d HTTP/1.1\r\nHost: a\r\nX-Api-Key: k2\r\n\r\n")
	defer c.Close()
	for i, want := range []struct {
		method string
		status int
		body   string
	}{{"POST", 200, "echo:abc"}, {"POST", 429, "attache: rate limited (route l/0)\n"}, {"HEAD", 429, ""}, {"GET", 200, "echo:"}} {
		resp, body := readResp(t, br, want.method)
		if resp.StatusCode != want.status || body != want.body {
			t.Fatalf("response %d: %d %q, want %d %q", i, resp.StatusCode, body, want.status, want.body)
		}
		if want.status == 429 && (resp.Header.Get("Retry-After") != "3600" || resp.Header.Get("RateLimit") != `"l/0";r=0;t=3600`) {
			t.Errorf("response %d: Retry-After %q RateLimit %q", i, resp.Header.Get("Retry-After"), resp.Header.Get("RateLimit"))
		}
	}
	if e, g := engineConns(p); e != 1 || g != 0 {
		t.Errorf("connections: %d in the engine, %d on the goroutine path; want 1, 0", e, g)
	}
	claim := compileRoute(Route{Match: RouteMatch{Prefix: "/"}, To: []RouteTarget{{Cluster: "c", Weight: 1}},
		RateLimit: &RateLimit{Requests: 1, Per: config.Duration(time.Second), Burst: 1, Key: &RateLimitKey{Claim: "sub"}, MaxKeys: 1}},
		func(string) *Cluster { return p.cluster })
	if claim.fast {
		t.Error("a route keyed on a claim is on the fast path")
	}
}
