package httpproxy

import (
	"github.com/attache-proxy/attache/internal/config"
	"os"
	"slices"
	"strings"
	"testing"
)

const stickyBase = `listeners:
  - name: l
    address: "127.0.0.1:7000"
    protocol: http
    routes:
      - match: {prefix: /}
        to: [{cluster: a, weight: 90}, {cluster: b, weight: 10}]
        sticky:
`
const stickyEnd = `clusters: [{name: a, endpoints: ["h:1"]}, {name: b, endpoints: ["h:2"]}]
`

func TestStickyDefaults(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name")
	}
	withPod := func(k string) (string, bool) {
		if k == "POD_NAME" {
			return " orders-7d9f-abcde\n", true
		}
		return "", false
	}
	for _, tc := range []struct {
		name, sticky string
		env          func(string) (string, bool)
		proxies      []config.CIDR
		header, pod  string
	}{
		{"defaults, POD_NAME", "          by: client_ip\n", withPod, []config.CIDR{"127.0.0.0/8", "::1/128"}, "x-forwarded-for", "orders-7d9f-abcde"},
		{"host name without POD_NAME", "          by: client_ip\n", noEnv, []config.CIDR{"127.0.0.0/8", "::1/128"}, "x-forwarded-for", host},
		{"given", "          by: header\n          name: x-user\n          trusted_proxies: [10.0.0.0/8, 192.0.2.7, \"2001:db8::/32\"]\n          forwarded_header: Forwarded\n          pod_key: p1\n",
			withPod, []config.CIDR{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"}, "Forwarded", "p1"},
		{"no trusted proxies", "          by: client_ip\n          trusted_proxies: []\n", withPod, nil, "x-forwarded-for", "orders-7d9f-abcde"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse([]byte(stickyBase+tc.sticky+stickyEnd), tc.env)
			if err != nil {
				t.Fatal(err)
			}
			s := Options(&c.Listeners[0]).Routes[0].Sticky
			if !slices.Equal(s.TrustedProxies, tc.proxies) || s.ForwardedHeader != tc.header || s.PodKey != tc.pod {
				t.Errorf("got %q %q %q, want %q %q %q", s.TrustedProxies, s.ForwardedHeader, s.PodKey, tc.proxies, tc.header, tc.pod)
			}
			// The rendered configuration (/config) loads again to the same.
			out, err := c.MarshalRedacted()
			if err != nil {
				t.Fatal(err)
			}
			back, err := parse(out, noEnv)
			if err != nil {
				t.Fatalf("rendered %s\ndoes not load: %v", out, err)
			}
			if b := Options(&back.Listeners[0]).Routes[0].Sticky; !slices.Equal(b.TrustedProxies, s.TrustedProxies) && len(s.TrustedProxies) > 0 || b.PodKey != s.PodKey {
				t.Errorf("rendered %s\nloads as %+v, want %+v", out, *b, *s)
			}
		})
	}
}

func TestStickyBad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sticky, want string }{
		{"not a prefix", "          by: client_ip\n          trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n",
			`listeners[0].routes[0].sticky.trusted_proxies[1]: "10.0.0.0/33": not an address prefix (want 10.0.0.0/8, fd00::/8 or one address) (line 10)`},
		{"host name", "          by: client_ip\n          trusted_proxies:\n            - ingress.local\n",
			`listeners[0].routes[0].sticky.trusted_proxies[0]: "ingress.local": not an address prefix (want 10.0.0.0/8, fd00::/8 or one address) (line 11)`},
		{"host bits", "          by: client_ip\n          trusted_proxies: [10.1.2.3/8]\n",
			`listeners[0].routes[0].sticky.trusted_proxies[0]: "10.1.2.3/8": host bits set (want 10.0.0.0/8) (line 10)`},
		{"zone", "          by: client_ip\n          trusted_proxies: [\"fe80::1%eth0\"]\n",
			`listeners[0].routes[0].sticky.trusted_proxies[0]: "fe80::1%eth0": not an address prefix`},
		{"mapped", "          by: client_ip\n          trusted_proxies: [\"::ffff:10.0.0.0/104\"]\n",
			`listeners[0].routes[0].sticky.trusted_proxies[0]: "::ffff:10.0.0.0/104": an IPv4-mapped IPv6 prefix never matches (addresses are compared as IPv4): write it as IPv4 (line 10)`},
		{"overlap", "          by: client_ip\n          trusted_proxies:\n            - 10.0.0.0/8\n            - 10.2.0.0/16\n",
			`listeners[0].routes[0].sticky.trusted_proxies[1]: 10.2.0.0/16 overlaps 10.0.0.0/8, listed before it (line 12)`},
		{"header name", "          by: client_ip\n          forwarded_header: \"x forwarded\"\n",
			`listeners[0].routes[0].sticky.forwarded_header: "x forwarded": not a valid header name (line 10)`},
		{"pod key control", "          by: client_ip\n          pod_key: \"a\\nb\"\n",
			`listeners[0].routes[0].sticky.pod_key: holds a control character (line 10)`},
		{"pod key empty", "          by: client_ip\n          pod_key: \"\"\n",
			`listeners[0].routes[0].sticky.pod_key: empty: no POD_NAME in the environment and no host name; set pod_key (the key of requests without a user identity) (line 10)`},
		{"pod key long", "          by: client_ip\n          pod_key: " + strings.Repeat("p", 254) + "\n",
			`listeners[0].routes[0].sticky.pod_key: longer than 253 bytes (line 10)`},
		{"unknown field", "          by: client_ip\n          trusted_hops: 2\n",
			`listeners[0].routes[0].sticky.trusted_hops`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(stickyBase+tc.sticky+stickyEnd), noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
