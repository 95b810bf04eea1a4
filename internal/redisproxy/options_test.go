package redisproxy

import (
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/tcpproxy"
)

// parse is config.Parse with the protocols of these tests: redis, and tcp
// for a listener of another protocol.
func parse(data []byte) (*config.Config, error) {
	return config.Parse(data, func(string) (string, bool) { return "", false }, []config.Schema{&tcpproxy.Protocol{}, &Protocol{}})
}

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
		{"hash", redis + "clusters:\n  - name: c\n    endpoints: [\"h:1\"]\n    redis: {hash: murmer}", `clusters[0].redis.hash: unknown hash "murmer" (line 5); did you mean "murmur"?`},
		{"distribution", redis + "clusters: [{name: c, endpoints: [\"h:1\"], redis: {distribution: ring}}]", `clusters[0].redis.distribution: unknown distribution "ring" (line 2); want one of ["ketama" "modula" "random"]`},
		{"hash_tag", redis + "clusters: [{name: c, endpoints: [\"h:1\"], redis: {hash_tag: \"{\"}}]", `clusters[0].redis.hash_tag: want two characters, like "{}" (line 2)`},
		{"server_connections", redis + "clusters: [{name: c, endpoints: [\"h:1\"], redis: {server_connections: 65}}]", `clusters[0].redis.server_connections: must be 1-64 (line 2)`},
		{"username without password", redis + "clusters: [{name: c, endpoints: [\"h:1\"], redis: {username: u}}]", `clusters[0].redis.username: needs password (line 2)`},
		{"discovery", redis + "clusters: [{name: c, discovery: {dns: {name: r, port: 6379}}}]", ""},
		{"zone_aware", redis + "clusters: [{name: c, endpoints: [\"h:1\"], zone_aware: {}}]\nzone: {name: a}", `clusters[0].zone_aware: not used by redis listeners (each key has its shard, in whatever zone)`},
		{"listener options on tcp", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c, redis: {password: x}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", `listeners[0].redis: only for protocol redis (line 1)`},
		{"redis block on tcp", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], redis: {hash: murmur}}]", "clusters[0].redis.hash: not used by tcp listeners (only redis listeners shard"},
		{"redis password without redis check", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], redis: {password: x}}]", "clusters[0].redis.password: not used by tcp listeners"},
		{"idle timeout on redis", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: redis, cluster: c, idle_timeout: 5m}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].idle_timeout: not used by redis listeners (only tcp and http listeners close idle clients) (line 1)"},
		{"default idle timeout on redis", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: redis, cluster: c, idle_timeout: 1h}]\nclusters: [{name: c, endpoints: [\"h:1\"], balance: round_robin}]", ""},
		{"redis auth for a redis check", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: redis}, redis: {username: u, password: p}}]", ""},
		{"tcp balance", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], balance: least_request, outlier_detection: {consecutive_failures: 3}}]", ""},
		{"redis ok", redis + "clusters: [{name: c, endpoints: [\"h:1:1 a\", \"h:2:1 b\", \"h:3\"], redis: {distribution: modula}}]", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml))
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

// TestPasswordMoved: a redis listener's password is listeners[].redis's;
// the flat listeners[].password of earlier configs is refused with the
// path to write it at.
func TestPasswordMoved(t *testing.T) {
	t.Parallel()
	const cl = "clusters:\n  - {name: c, endpoints: [\"h:1\"]}\n"
	_, err := parse([]byte("listeners:\n  - {name: a, address: \"127.0.0.1:7001\", protocol: redis, cluster: c}\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: redis\n    cluster: c\n    password: s3cret\n" + cl))
	if want := "listeners[1].password: moved: write it as listeners[1].redis.password (line 7)"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	c, err := parse([]byte("listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: redis\n    cluster: c\n    redis: {password: s3cret}\n" + cl))
	if err != nil {
		t.Fatal(err)
	}
	if got := listenerOptions(&c.Listeners[0]).Password; got != "s3cret" {
		t.Errorf("password: got %q", got)
	}
	out, _ := c.MarshalRedacted()
	if strings.Contains(string(out), "s3cret") || !strings.Contains(string(out), "password: "+config.Redacted) {
		t.Errorf("rendered:\n%s", out)
	}
}

// TestClusterDefaults: a cluster a redis listener uses has clusters[].redis
// with the named defaults, written or not; a timeout written as 0 stays 0.
func TestClusterDefaults(t *testing.T) {
	t.Parallel()
	c, err := parse([]byte("listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: redis, cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}, {name: d, endpoints: [\"h:2\"], redis: {timeout: 0s}}]"))
	if err != nil {
		t.Fatal(err)
	}
	want := ClusterOptions{Hash: DefaultHash, Distribution: DefaultDistribution, ServerFailureLimit: DefaultServerFailureLimit,
		ServerRetryTimeout: config.Duration(DefaultServerRetryTimeout), ServerConnections: DefaultServerConnections, Timeout: config.Duration(DefaultTimeout)}
	if got := clusterOptions(&c.Clusters[0]); got == nil || *got != want {
		t.Errorf("clusters[0].redis: got %+v, want %+v", got, want)
	}
	if got := clusterOptions(&c.Clusters[1]); got == nil || got.Timeout != 0 || got.ServerRetryTimeout.D() != 30*time.Second {
		t.Errorf("clusters[1].redis: got %+v, want timeout 0 and the other defaults", got)
	}
}
