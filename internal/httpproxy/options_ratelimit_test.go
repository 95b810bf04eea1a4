package httpproxy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const rlBase = `listeners:
  - name: l
    address: "127.0.0.1:7000"
    protocol: http
    routes:
      - match: {prefix: /}
        to: [{cluster: a}]
        rate_limit:
`

func rlConfig(route, cluster string) string {
	return rlBase + route + "clusters:\n  - name: a\n    endpoints: [\"h:1\"]\n" + cluster
}

func TestRateLimitDefaults(t *testing.T) {
	t.Parallel()
	c, err := parse([]byte(rlConfig("          requests: 100\n          key: {end_user: true}\n",
		"    rate_limit: {requests: 5, queue: {}}\n")), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	rl := Options(&c.Listeners[0]).Routes[0].RateLimit
	if rl.Per.D() != time.Second || rl.Burst != 100 || rl.MaxKeys != 10000 || rl.Headers != "limited" {
		t.Errorf("route: got per %v burst %d max_keys %d headers %q, want 1s 100 10000 limited", rl.Per.D(), rl.Burst, rl.MaxKeys, rl.Headers)
	}
	if k := rl.Key; !slices.Equal(k.TrustedProxies, DefaultTrustedProxies()) || k.ForwardedHeader != "x-forwarded-for" {
		t.Errorf("key: got %q %q, want loopback and x-forwarded-for", k.TrustedProxies, k.ForwardedHeader)
	}
	u := clusterOptions(&c.Clusters[0]).RateLimit
	if u.Per.D() != time.Second || u.Burst != 5 || u.Queue.Max != 100 || u.Queue.Timeout.D() != time.Second {
		t.Errorf("cluster: got %+v %+v, want per 1s, burst 5, queue 100 for 1s", *u, *u.Queue)
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
	if b := Options(&back.Listeners[0]).Routes[0].RateLimit; b.Burst != rl.Burst || b.MaxKeys != rl.MaxKeys || !b.Key.EndUser {
		t.Errorf("rendered %s\nloads as %+v, want %+v", out, *b, *rl)
	}
}

func TestRateLimitBad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, route, cluster, want string }{
		{"no requests", "          per: 1s\n", "",
			"listeners[0].routes[0].rate_limit.requests: must be positive (requests allowed each per) (line 9)"},
		{"per not whole seconds", "          requests: 10\n          per: 100ms\n", "",
			"listeners[0].routes[0].rate_limit.per: 100ms: must be a whole number of seconds (1s, 1m, 1h); for 10 per 100ms write requests: 100, per: 1s, burst: 10 (line 10)"},
		{"negative burst", "          requests: 10\n          burst: -1\n", "",
			"listeners[0].routes[0].rate_limit.burst: must be positive (requests allowed at once) (line 10)"},
		{"two keys", "          requests: 10\n          key: {header: x-api-key, end_user: true}\n", "",
			"listeners[0].routes[0].rate_limit.key: give only one of header, claim or end_user (line 10)"},
		{"empty key", "          requests: 10\n          key: {}\n", "",
			"listeners[0].routes[0].rate_limit.key: needs one of header, claim or end_user (line 10)"},
		{"bad header", "          requests: 10\n          key: {header: \"x api\"}\n", "",
			`listeners[0].routes[0].rate_limit.key.header: "x api": not a valid header name (line 10)`},
		{"proxies without end_user", "          requests: 10\n          key: {header: x-a, trusted_proxies: [10.0.0.0/8]}\n", "",
			"listeners[0].routes[0].rate_limit.key.trusted_proxies: only with end_user: true (line 10)"},
		{"overlapping proxies", "          requests: 10\n          key: {end_user: true, trusted_proxies: [10.0.0.0/8, 10.1.0.0/16]}\n", "",
			"listeners[0].routes[0].rate_limit.key.trusted_proxies[1]: 10.1.0.0/16 overlaps 10.0.0.0/8, listed before it (line 10)"},
		{"claim without jwt", "          requests: 10\n          key: {claim: sub}\n", "",
			"listeners[0].routes[0].rate_limit.key.claim: needs the route's jwt (a claim is read from the token it verifies) (line 10)"},
		{"max_keys without key", "          requests: 10\n          max_keys: 5\n", "",
			"listeners[0].routes[0].rate_limit.max_keys: not used without key (the route has one bucket) (line 10)"},
		{"max_keys too many", "          requests: 10\n          key: {header: x-a}\n          max_keys: 2000000\n", "",
			"listeners[0].routes[0].rate_limit.max_keys: must be 1-1000000 (line 11)"},
		{"headers", "          requests: 10\n          headers: allways\n", "",
			`listeners[0].routes[0].rate_limit.headers: unknown headers mode "allways" (line 10)`},
		{"unknown field", "          requests: 10\n          rate: 5\n", "",
			`listeners[0].routes[0].rate_limit.rate: unknown field`},
		{"cluster queue max", "          requests: 10\n", "    rate_limit: {requests: 5, queue: {max: -1}}\n",
			"clusters[0].rate_limit.queue.max: must be positive (leave queue out to refuse at once) (line 13)"},
		{"cluster queue timeout", "          requests: 10\n", "    rate_limit: {requests: 5, queue: {timeout: -1s}}\n",
			"clusters[0].rate_limit.queue.timeout: must be positive (line 13)"},
		{"cluster per", "          requests: 10\n", "    rate_limit: {requests: 5, per: 1500ms}\n",
			"clusters[0].rate_limit.per: 1.5s: must be a whole number of seconds (1s, 1m, 1h); for 10 per 100ms write requests: 100, per: 1s, burst: 10 (line 13)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(rlConfig(tc.route, tc.cluster)), noEnv)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want %q", err, tc.want)
			}
		})
	}
}

func TestRateLimitClusterOfTCP(t *testing.T) {
	t.Parallel()
	cfg := rlConfig("          requests: 10\n", "    rate_limit: {requests: 5}\n") +
		"  - name: b\n    endpoints: [\"h:2\"]\n    rate_limit: {requests: 5}\n"
	cfg = strings.Replace(cfg, "clusters:", `  - name: t
    address: "127.0.0.1:7001"
    cluster: a
  - name: t2
    address: "127.0.0.1:7002"
    cluster: b
clusters:`, 1)
	_, err := parse([]byte(cfg), noEnv)
	for _, want := range []string{
		"clusters[0].rate_limit: not honoured by tcp listeners (only HTTP requests are counted); give them a cluster of their own",
		"clusters[1].rate_limit: not used by tcp listeners (it limits the HTTP requests sent to the cluster)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}
