package httpproxy

import (
	"bufio"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/attache-proxy/attache/internal/balance"
)

var loopbackTrust = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

func TestEndUser(t *testing.T) {
	t.Parallel()
	ten := append([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, loopbackTrust...)
	for _, tc := range []struct {
		name      string
		forwarded bool
		proxies   []netip.Prefix // nil: loopback
		peer      string
		lines     []string
		want      string // "" : invalid
	}{
		{name: "no header: the peer", peer: "127.0.0.1", want: "127.0.0.1"},
		{name: "xff one", peer: "127.0.0.1", lines: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "xff rightmost untrusted", peer: "127.0.0.1", lines: []string{"203.0.113.1, 198.51.100.7"}, want: "198.51.100.7"},
		{name: "xff trusted hops skipped", peer: "127.0.0.1", lines: []string{"203.0.113.1, 198.51.100.7, 10.0.0.3, 127.0.0.1"}, proxies: ten, want: "198.51.100.7"},
		{name: "xff untrusted ingress is the user", peer: "127.0.0.1", lines: []string{"198.51.100.7, 10.0.0.3"}, want: "10.0.0.3"},
		{name: "xff lines in order", peer: "127.0.0.1", lines: []string{"203.0.113.1", "198.51.100.7", " 127.0.0.2 "}, want: "198.51.100.7"},
		{name: "xff empty elements", peer: "127.0.0.1", lines: []string{" , 198.51.100.7 ,, "}, want: "198.51.100.7"},
		{name: "xff ports", peer: "127.0.0.1", lines: []string{"198.51.100.7:5123"}, want: "198.51.100.7"},
		{name: "xff ipv6 bare", peer: "127.0.0.1", lines: []string{"2001:db8::7"}, want: "2001:db8::7"},
		{name: "xff ipv6 bracketed port", peer: "127.0.0.1", lines: []string{"[2001:db8::7]:443"}, want: "2001:db8::7"},
		{name: "xff mapped", peer: "127.0.0.1", lines: []string{"::ffff:198.51.100.7"}, want: "198.51.100.7"},
		{name: "xff mapped loopback trusted", peer: "::ffff:127.0.0.1", lines: []string{"198.51.100.7, ::ffff:127.0.0.5"}, want: "198.51.100.7"},
		{name: "xff zone dropped", peer: "127.0.0.1", lines: []string{"fe80::1%eth0"}, want: "fe80::1"},
		{name: "xff all trusted: leftmost", peer: "127.0.0.1", lines: []string{"10.0.0.9, 10.0.0.3"}, proxies: ten, want: "10.0.0.9"},
		{name: "xff malformed right of user: ignored", peer: "127.0.0.1", lines: []string{"198.51.100.7, bogus"}, want: "127.0.0.1"},
		{name: "xff malformed left of user: not read", peer: "127.0.0.1", lines: []string{"bogus, 198.51.100.7"}, want: "198.51.100.7"},
		{name: "xff unknown", peer: "127.0.0.1", lines: []string{"198.51.100.7, unknown"}, want: "127.0.0.1"},
		{name: "xff bad port", peer: "127.0.0.1", lines: []string{"198.51.100.7:123456"}, want: "127.0.0.1"},
		{name: "xff ipv6 port unbracketed", peer: "127.0.0.1", lines: []string{"2001:db8::7:99999"}, want: "127.0.0.1"},
		{name: "untrusted peer: header not read", peer: "192.0.2.9", lines: []string{"198.51.100.7"}, want: "192.0.2.9"},
		{name: "no trusted proxies", peer: "127.0.0.1", proxies: []netip.Prefix{}, lines: []string{"198.51.100.7"}, want: "127.0.0.1"},
		{name: "trusted remote peer", peer: "10.0.0.3", proxies: ten, lines: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "invalid peer", peer: "", lines: []string{"198.51.100.7"}, want: ""},

		{name: "fwd simple", forwarded: true, peer: "127.0.0.1", lines: []string{"for=198.51.100.7"}, want: "198.51.100.7"},
		{name: "fwd quoted with port", forwarded: true, peer: "127.0.0.1", lines: []string{`for="198.51.100.7:8080"`}, want: "198.51.100.7"},
		{name: "fwd ipv6 port", forwarded: true, peer: "127.0.0.1", lines: []string{`for="[2001:db8:cafe::17]:4711"`}, want: "2001:db8:cafe::17"},
		{name: "fwd ipv6 obfuscated port", forwarded: true, peer: "127.0.0.1", lines: []string{`for="[2001:db8:cafe::17]:_p1"`}, want: "2001:db8:cafe::17"},
		{name: "fwd ipv6 unquoted", forwarded: true, peer: "127.0.0.1", lines: []string{`for=[2001:db8:cafe::17]`}, want: "2001:db8:cafe::17"},
		{name: "fwd params and case", forwarded: true, peer: "127.0.0.1", lines: []string{`proto=https;FOR=198.51.100.7;by=10.0.0.1`}, want: "198.51.100.7"},
		{name: "fwd list right to left", forwarded: true, peer: "127.0.0.1", lines: []string{`for=203.0.113.1, for=198.51.100.7;proto=http, for=127.0.0.1`}, want: "198.51.100.7"},
		{name: "fwd quoted comma and semicolon", forwarded: true, peer: "127.0.0.1", lines: []string{`for=203.0.113.1, for=198.51.100.7;host="a,b;c=d"`}, want: "198.51.100.7"},
		{name: "fwd quoted pair elsewhere", forwarded: true, peer: "127.0.0.1", lines: []string{`for=198.51.100.7;ext="a\"b"`}, want: "198.51.100.7"},
		{name: "fwd empty pairs", forwarded: true, peer: "127.0.0.1", lines: []string{`;for=198.51.100.7;;proto=http;, for=127.0.0.2;`}, want: "198.51.100.7"},
		{name: "fwd empty element", forwarded: true, peer: "127.0.0.1", lines: []string{`for=198.51.100.7, ;`}, want: "127.0.0.1"},
		{name: "fwd space around equals", forwarded: true, peer: "127.0.0.1", lines: []string{`for = 198.51.100.7`}, want: "127.0.0.1"},
		{name: "fwd lines", forwarded: true, peer: "127.0.0.1", lines: []string{"for=203.0.113.1", "for=198.51.100.7"}, want: "198.51.100.7"},
		{name: "fwd obfuscated ignored", forwarded: true, peer: "127.0.0.1", lines: []string{`for=198.51.100.7, for=_hidden`}, want: "127.0.0.1"},
		{name: "fwd unknown ignored", forwarded: true, peer: "127.0.0.1", lines: []string{`for=198.51.100.7, for="unknown"`}, want: "127.0.0.1"},
		{name: "fwd no for", forwarded: true, peer: "127.0.0.1", lines: []string{`for=198.51.100.7, proto=https`}, want: "127.0.0.1"},
		{name: "fwd obfuscated left of user", forwarded: true, peer: "127.0.0.1", lines: []string{`for=_x, for=198.51.100.7`}, want: "198.51.100.7"},
		{name: "fwd duplicate for", forwarded: true, peer: "127.0.0.1", lines: []string{`for=198.51.100.7;for=198.51.100.8`}, want: "127.0.0.1"},
		{name: "fwd unterminated quote", forwarded: true, peer: "127.0.0.1", lines: []string{`for="198.51.100.7`}, want: "127.0.0.1"},
		{name: "fwd quoted pair in node", forwarded: true, peer: "127.0.0.1", lines: []string{`for="198.51.100.\7"`}, want: "127.0.0.1"},
		{name: "fwd garbage after value", forwarded: true, peer: "127.0.0.1", lines: []string{`for=198.51.100.7 x`}, want: "127.0.0.1"},
		{name: "fwd no value", forwarded: true, peer: "127.0.0.1", lines: []string{`for=`}, want: "127.0.0.1"},
		{name: "fwd bare address", forwarded: true, peer: "127.0.0.1", lines: []string{`198.51.100.7`}, want: "127.0.0.1"},
		{name: "fwd bad obfuscated", forwarded: true, peer: "127.0.0.1", lines: []string{`for="_a b"`}, want: "127.0.0.1"},
		{name: "fwd all trusted", forwarded: true, peer: "127.0.0.1", lines: []string{`for=127.0.0.3, for="[::1]"`}, want: "127.0.0.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := trust{proxies: tc.proxies, forwarded: tc.forwarded}
			if tc.proxies == nil {
				tr.proxies = loopbackTrust
			}
			peer, _ := netip.ParseAddr(tc.peer)
			got := tr.endUser(peer, tc.lines)
			want := netip.Addr{}
			if tc.want != "" {
				want = netip.MustParseAddr(tc.want)
			}
			if got != want {
				t.Errorf("%s from %s: got %v, want %v", tc.lines, tc.peer, got, want)
			}
		})
	}
}

// TestStickyHash: the sticky hashes are balance.HashString of the keys,
// so that every wire path and the previous keys agree.
func TestStickyHash(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"", "a", "user-1", "198.51.100.7", "2001:db8::1"} {
		if got, want := hashKey("h:", k), balance.HashString("h:"+k); got != want {
			t.Errorf("hashKey(h:, %q) = %x, want %x", k, got, want)
		}
		if got, want := hashBytes("ip:", []byte(k)), balance.HashString("ip:"+k); got != want {
			t.Errorf("hashBytes(ip:, %q) = %x, want %x", k, got, want)
		}
	}
}

// TestStickyPodShare: requests without an end user key on the pod: a pod
// stays on one side, and over 200 pod identities about 10% take the 10%
// side of a split, where keying on the loopback peer put every pod on the
// same side.
func TestStickyPodShare(t *testing.T) {
	t.Parallel()
	a, b := &Cluster{}, &Cluster{}
	byName := func(n string) *Cluster {
		if n == "a" {
			return a
		}
		return b
	}
	route := func(pod string) *compiledRoute {
		return compileRoute(Route{Match: RouteMatch{Prefix: "/"},
			Sticky: &Sticky{By: "client_ip", TrustedProxies: DefaultTrustedProxies(), ForwardedHeader: "x-forwarded-for", PodKey: pod},
			To:     []RouteTarget{{Cluster: "a", Weight: 90}, {Cluster: "b", Weight: 10}}}, byName)
	}
	const pods = 200
	toB := 0
	for i := range pods {
		// Pod names as a Deployment makes them.
		rt := route(fmt.Sprintf("orders-7d9f8b6c4-%05x", i*7919))
		var r reqHead
		if v, _ := r.parse("GET / HTTP/1.1\r\nHost: localhost\r\n"); v != serveFast {
			t.Fatal("head refused")
		}
		first := rt.pickFor(&r, netip.MustParseAddr("127.0.0.1"))
		if again := rt.pickFor(&r, netip.MustParseAddr("::1")); again != first {
			t.Fatalf("pod %d moved between loopback peers", i)
		}
		if first == b {
			toB++
		}
	}
	// 20 expected; 8-40 holds every plausible draw.
	if toB < 8 || toB > 40 {
		t.Errorf("%d of %d pods on the 10%% side, want about %d", toB, pods, pods/10)
	}
}

// TestStickyPathsAgree: the net/http path's pick and the fast paths'
// pickFor put every request on the same side.
func TestStickyPathsAgree(t *testing.T) {
	t.Parallel()
	a, b := &Cluster{}, &Cluster{}
	byName := func(n string) *Cluster {
		if n == "a" {
			return a
		}
		return b
	}
	for _, hdr := range []string{"x-forwarded-for", "forwarded"} {
		rt := compileRoute(Route{Match: RouteMatch{Prefix: "/"},
			Sticky: &Sticky{By: "cookie", Name: "u", TrustedProxies: DefaultTrustedProxies(), ForwardedHeader: hdr, PodKey: "p"},
			To:     []RouteTarget{{Cluster: "a", Weight: 50}, {Cluster: "b", Weight: 50}}}, byName)
		for i := range 200 {
			var head string
			switch i % 3 {
			case 0:
				head = fmt.Sprintf("Cookie: u=user-%d\r\n", i)
			case 1:
				v := fmt.Sprintf("198.51.100.%d", i)
				if hdr == "forwarded" {
					v = "for=" + v
				}
				head = fmt.Sprintf("%s: 203.0.113.1\r\n%s: %s\r\n", hdr, hdr, v)
			}
			raw := "GET / HTTP/1.1\r\nHost: localhost\r\n" + head
			var r reqHead
			if v, _ := r.parse(raw); v != serveFast {
				t.Fatalf("%q refused", raw)
			}
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw + "\r\n")))
			if err != nil {
				t.Fatal(err)
			}
			req.RemoteAddr = "127.0.0.1:5000"
			if x, y := rt.pick(req), rt.pickFor(&r, netip.MustParseAddr("127.0.0.1")); x != y {
				t.Errorf("%q: net/http and fast paths disagree", raw)
			}
		}
	}
}

// TestStickyAllocs: the fast paths' sticky pick by end user allocates
// nothing (the engine allocates nothing per request).
func TestStickyAllocs(t *testing.T) {
	a, b := &Cluster{}, &Cluster{}
	rt := compileRoute(Route{Match: RouteMatch{Prefix: "/"},
		Sticky: &Sticky{By: "client_ip", TrustedProxies: DefaultTrustedProxies(), ForwardedHeader: "forwarded", PodKey: "p"},
		To:     []RouteTarget{{Cluster: "a", Weight: 90}, {Cluster: "b", Weight: 10}}},
		func(n string) *Cluster {
			if n == "a" {
				return a
			}
			return b
		})
	var r reqHead
	if v, _ := r.parse("GET / HTTP/1.1\r\nHost: localhost\r\nForwarded: for=203.0.113.1, for=\"[2001:db8::7]:443\"\r\nForwarded: for=127.0.0.1\r\n"); v != serveFast {
		t.Fatal("head refused")
	}
	peer := netip.MustParseAddr("127.0.0.1")
	if n := testing.AllocsPerRun(100, func() { rt.pickFor(&r, peer) }); n != 0 {
		t.Errorf("%v allocations per pick, want 0", n)
	}
}
