package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/hashkit"
	"github.com/attache-proxy/attache/internal/testenv"
)

// redisKeyOn returns a key that a ketama ring over servers puts on
// servers[want].
func redisKeyOn(t *testing.T, servers []hashkit.Server, want int) string {
	t.Helper()
	ring, err := hashkit.Build("ketama", servers)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100000 {
		if k := fmt.Sprint("key:", i); ring.Pick([]byte(k), hashkit.FNV1a_64, "{}") == want {
			return k
		}
	}
	t.Fatalf("no key on %s", servers[want].Name)
	return ""
}

// clusterJSON returns cluster name's entry of /status, decoded.
func (h *harness) clusterJSON(name string) map[string]any {
	h.t.Helper()
	_, body := h.admin("GET", "/status")
	var st struct {
		Clusters []map[string]any `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		h.t.Fatalf("/status: %v\n%s", err, body)
	}
	for _, c := range st.Clusters {
		if c["name"] == name {
			return c
		}
	}
	h.t.Fatalf("/status has no cluster %s:\n%s", name, body)
	return nil
}

// TestRedisShardsAreEndpoints: a Redis cluster's shards are its upstream
// endpoints, from file discovery with nutcracker's "host:port:weight name"
// form: the ring is keyed by the names; the redis health check failing
// takes a shard out of the ring under auto_eject_hosts (its keys move),
// shown in /status (endpoints and redis_shards) and the cluster's
// metrics; the file gaining a shard rebuilds the ring with it.
func TestRedisShardsAreEndpoints(t *testing.T) {
	t.Parallel()
	a, stopA := testenv.RedisProc(t)
	b, c := testenv.Redis(t), testenv.Redis(t)
	file := filepath.Join(t.TempDir(), "shards.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf("- %s:1 alpha\n- %s:1 beta\n", a, b)), 0o644)
	h := start(t, yamlf(`
listeners:
  - {name: cache, address: "127.0.0.1:0", protocol: redis, cluster: shards}
clusters:
  - name: shards
    discovery: {file: {path: %s}}
    health_check: {type: redis, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1}
    redis: {hash: fnv1a_64, distribution: ketama, hash_tag: "{}", auto_eject_hosts: true}
`, file), nil)
	h.waitReady()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: h.addr("cache"), Protocol: 2, DisableIdentity: true, MaxRetries: -1})
	defer rdb.Close()

	both := []hashkit.Server{{Name: "alpha", Weight: 1, Live: true}, {Name: "beta", Weight: 1, Live: true}}
	onAlpha := redisKeyOn(t, both, 0)
	if err := rdb.Set(ctx, onAlpha, "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, _ := testenv.RedisCommand(a, "GET", onAlpha); got != "$1" {
		t.Fatalf("%s not on alpha (%s): the ring is not keyed by the file's names", onAlpha, a)
	}
	cs := h.clusterJSON("shards")
	if eps := cs["endpoints"].([]any); len(eps) != 2 || eps[0].(map[string]any)["name"] != "alpha" {
		t.Errorf("/status endpoints: %v, want alpha and beta", eps)
	}

	stopA()
	endpoint := fmt.Sprintf(`{cluster="shards",endpoint=%q}`, a)
	eventually(t, 10*time.Second, "alpha unhealthy in the metrics", func() bool {
		return h.metric("attache_cluster_endpoint_healthy"+endpoint) == "0"
	})
	for _, s := range h.clusterJSON("shards")["redis_shards"].([]any) {
		sh := s.(map[string]any)
		if sh["address"] == a && (sh["health"] != "unhealthy" || sh["in_ring"] != false) {
			t.Errorf("redis_shards of the dead shard: %v, want unhealthy and out of the ring", sh)
		}
	}
	eventually(t, 10*time.Second, onAlpha+" moved to beta", func() bool {
		rdb.Set(ctx, onAlpha, "2", 0)
		got, _ := testenv.RedisCommand(b, "GET", onAlpha)
		return got == "$1"
	})

	// The file gains gamma: the ring is beta and gamma (alpha is out).
	os.WriteFile(file, []byte(fmt.Sprintf("- %s:1 alpha\n- %s:1 beta\n- %s:1 gamma\n", a, b, c)), 0o644)
	onGamma := redisKeyOn(t, []hashkit.Server{{Name: "alpha", Weight: 1}, {Name: "beta", Weight: 1, Live: true}, {Name: "gamma", Weight: 1, Live: true}}, 2)
	eventually(t, 10*time.Second, onGamma+" on gamma", func() bool {
		rdb.Set(ctx, onGamma, "3", 0)
		got, _ := testenv.RedisCommand(c, "GET", onGamma)
		return got == "$1"
	})
	if n := len(h.clusterJSON("shards")["redis_shards"].([]any)); n != 3 {
		t.Errorf("redis_shards: %d, want 3", n)
	}
}
