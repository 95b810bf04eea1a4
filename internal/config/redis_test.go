package config

import (
	"strings"
	"testing"
)

// TestRedisClusterFields: settings a Redis cluster's sharding pool does not
// use are refused rather than ignored, and so are two shards with one ring
// name (nutcracker refuses them too); the same settings stay valid on a
// cluster of a TCP listener.
func TestRedisClusterFields(t *testing.T) {
	t.Parallel()
	const redis = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: redis, cluster: c}]\n"
	const tcp = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"balance", redis + "clusters: [{name: c, endpoints: [\"h:1\"], balance: least_request}]",
			`clusters[0].balance: not used by redis listeners`},
		{"outlier_detection", redis + "clusters: [{name: c, endpoints: [\"h:1\"], outlier_detection: {consecutive_failures: 3}}]",
			`clusters[0].outlier_detection: not used by redis listeners`},
		{"same name", redis + "clusters: [{name: c, endpoints: [\"h:1:1 a\", \"h:2:1 a\"]}]",
			`clusters[0].endpoints[1]: shard name "a" is also endpoints[0]'s (nutcracker refuses it: both would take the same ring points) (line 2)`},
		{"name equals an address", redis + "clusters: [{name: c, endpoints: [\"h:1\", \"g:2:1 h:1\"]}]",
			`clusters[0].endpoints[1]: shard name "h:1" is also endpoints[0]'s`},
		{"tcp balance", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], balance: least_request, outlier_detection: {consecutive_failures: 3}}]", ""},
		{"redis ok", redis + "clusters: [{name: c, endpoints: [\"h:1:1 a\", \"h:2:1 b\", \"h:3\"], redis: {distribution: modula}}]", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), noEnv)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("got no error, want %q", tc.want)
			case !strings.Contains(err.Error(), tc.want):
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}
