package config

import (
	"strings"
	"testing"
	"time"
)

// TestUnusedFields: a field set on a listener or cluster whose protocol
// never reads it is refused with its path, line and why, never accepted
// and ignored.
func TestUnusedFields(t *testing.T) {
	t.Parallel()
	const tcp = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	const redis = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: redis, cluster: c}]\n"
	const pgPlain = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c}]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"balance on redis", redis + "clusters: [{name: c, endpoints: [\"h:1\"], balance: least_connections}]", "clusters[0].balance: not used by redis listeners (a redis cluster picks shards by key hash (redis.distribution)) (line 2)"},
		{"outlier on redis", redis + "clusters: [{name: c, endpoints: [\"h:1\"], outlier_detection: {consecutive_failures: 1}}]", "clusters[0].outlier_detection: not used by redis listeners"},
		{"5xx on tcp", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], outlier_detection: {consecutive_5xx: 3}}]", "clusters[0].outlier_detection.consecutive_5xx: not used by tcp listeners (it counts HTTP responses) (line 2)"},
		{"weight with round_robin", tcp + "clusters: [{name: c, endpoints: [\"h:1\", \"h:2 weight=3\"]}]", "clusters[0].endpoints[1]: weight 3 is not used by balance round_robin; use weighted, random, least_request, p2c or ring_hash (line 2)"},
		{"weight with first", tcp + "clusters: [{name: c, balance: first, endpoints: [\"h:1:2\"]}]", "clusters[0].endpoints[0]: weight 2 is not used by balance first"},
		{"check path on tcp check", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: tcp, path: /x}}]", "clusters[0].health_check.path: not used by a tcp check (only type http) (line 2)"},
		{"check host on amqp check", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: amqp, host: x}}]", "clusters[0].health_check.host: not used by a amqp check (only type http)"},
		{"check status on tcp check", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {expect_status: [\"200\"]}}]", "clusters[0].health_check.expect_status: not used by a tcp check"},
		{"check user on http check", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: http, user: u}}]", "clusters[0].health_check.user: not used by a http check (only type postgres)"},
		{"ewma on postgres", pgPlain + "clusters: [{name: c, endpoints: [\"h:1\"], balance: ewma}]", "clusters[0].balance: ewma is not honoured by postgres listeners (only http and tcp listeners time their requests or connections); use p2c or least_request (line 2)"},
		{"ewma on tcp and postgres", "listeners:\n  - {name: t, address: \"127.0.0.1:7001\", cluster: c}\n  - {name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c}\nclusters:\n  - {name: c, endpoints: [\"h:1\"], balance: ewma}", "clusters[0].balance: ewma is not honoured by postgres listeners (only http and tcp listeners time their requests or connections); use p2c or least_request (line 5)"},
		{"ewma on redis", redis + "clusters: [{name: c, endpoints: [\"h:1\"], balance: ewma}]", "clusters[0].balance: not used by redis listeners"},
		{"ewma block with another policy", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], balance: p2c, ewma: {decay: 5s}}]", "clusters[0].ewma: not used by balance p2c (only by balance ewma) (line 2)"},
		{"ewma block with the default policy", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], ewma: {default_rtt: 5ms}}]", "clusters[0].ewma: not used by balance round_robin (only by balance ewma)"},
		{"ewma negative decay", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], balance: ewma, ewma: {decay: -1s}}]", "clusters[0].ewma.decay: must be positive (line 2)"},
		{"ewma negative default_rtt", tcp + "clusters: [{name: c, endpoints: [\"h:1\"], balance: ewma, ewma: {default_rtt: -1ms}}]", "clusters[0].ewma.default_rtt: must be positive (line 2)"},
		{"check password on redis check", redis + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: redis, password: p}}]", "clusters[0].health_check.password: not used by a redis check (only type postgres) (line 2); a redis check uses redis.username and redis.password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), noEnv)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestUsedFieldsAccepted: the same fields where they are used, set to
// their defaults elsewhere, or on a cluster no listener uses, load.
func TestUsedFieldsAccepted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml string }{
		{"weights on a redis ring", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: redis, cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1:3 a\", \"h:2:1 b\"]}]"},
		{"weights with weighted", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, balance: weighted, endpoints: [\"h:1 weight=3\"]}]"},
		{"ewma on tcp and http, weighted", "listeners:\n  - {name: l, address: \"127.0.0.1:7000\", cluster: c}\n  - {name: h, address: \"127.0.0.1:7001\", protocol: http, cluster: c}\nclusters: [{name: c, balance: ewma, ewma: {decay: 30s, default_rtt: 5ms}, endpoints: [\"h:1 weight=3\", \"h:2\"]}]"},
		{"admin off", "admin: {address: \"off\"}\nlisteners: [{name: l, address: \"127.0.0.1:9901\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]"},
		{"pg check fields", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: postgres, user: u, database: d, password: p}}]"},
	} {
		if _, err := parse([]byte(tc.yaml), noEnv); err != nil {
			t.Errorf("%s: got %v, want no error", tc.name, err)
		}
	}
}

// TestUnusedDefaultsMatch: the defaults the unused-field checks compare
// with are the ones applyDefaults fills in.
func TestUnusedDefaultsMatch(t *testing.T) {
	t.Parallel()
	c, err := parse([]byte("listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: redis, cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Clusters[0]
	if *cl.OutlierDetection != defaultOutlier {
		t.Errorf("outlier_detection: got %+v, want %+v", *cl.OutlierDetection, defaultOutlier)
	}
}

// TestEWMADefaults: balance ewma gets Linkerd's decay and default_rtt
// unless set; other policies get no ewma block.
func TestEWMADefaults(t *testing.T) {
	t.Parallel()
	const tcp = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	c, err := parse([]byte(tcp+"clusters: [{name: c, endpoints: [\"h:1\"], balance: ewma, ewma: {decay: 2s}}, {name: d, endpoints: [\"h:2\"], balance: ewma}, {name: e, endpoints: [\"h:3\"]}]"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *c.Clusters[0].EWMA, (ClusterEWMA{Decay: Duration(2 * time.Second), DefaultRTT: Duration(DefaultEWMADefaultRTT)}); got != want {
		t.Errorf("decay set: got %+v, want %+v", got, want)
	}
	if got, want := *c.Clusters[1].EWMA, (ClusterEWMA{Decay: Duration(DefaultEWMADecay), DefaultRTT: Duration(DefaultEWMADefaultRTT)}); got != want {
		t.Errorf("defaults: got %+v, want %+v", got, want)
	}
	if c.Clusters[2].EWMA != nil {
		t.Errorf("round_robin: got ewma %+v, want none", *c.Clusters[2].EWMA)
	}
}
