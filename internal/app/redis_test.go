package app

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/hashkit"
	"github.com/attache-proxy/attache/internal/testenv"
)

// TestRedisListener: the seed's sharding ambassador from a config file,
// with twemproxy's endpoint form, a client password, and go-redis as the
// application.
func TestRedisListener(t *testing.T) {
	t.Parallel()
	s0, s1, s2 := testenv.Redis(t), testenv.Redis(t), testenv.Redis(t)
	h := start(t, yamlf(`
listeners:
  - {name: cache, address: "127.0.0.1:0", protocol: redis, cluster: shards, redis: {password: "${PROXY_PASSWORD}"}}
clusters:
  - name: shards
    endpoints: ["%s:1 shard0", "%s:1 shard1", "%s:1 shard2"]
    health_check: {type: redis, interval: 200ms}
    redis: {hash: fnv1a_64, distribution: ketama, hash_tag: "{}", server_connections: 2}
`, s0, s1, s2), map[string]string{"PROXY_PASSWORD": "pw"})
	h.waitReady()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: h.addr("cache"), Password: "pw", DisableIdentity: true})
	defer rdb.Close()
	for i := 0; i < 300; i++ {
		if err := rdb.Set(ctx, fmt.Sprint("key:", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	vals, err := rdb.MGet(ctx, "key:1", "key:100", "key:299").Result()
	if err != nil || fmt.Sprint(vals) != "[1 100 299]" {
		t.Fatalf("MGET through the listener: %v %v", vals, err)
	}
	// keys are where a named ketama ring puts them
	ring, _ := hashkit.Build("ketama", []hashkit.Server{{Name: "shard0", Weight: 1, Live: true}, {Name: "shard1", Weight: 1, Live: true}, {Name: "shard2", Weight: 1, Live: true}})
	shards := []string{s0, s1, s2}
	for i := 0; i < 300; i += 7 {
		k := fmt.Sprint("key:", i)
		want := shards[ring.Pick([]byte(k), hashkit.FNV1a_64, "{}")]
		if got, _ := testenv.RedisCommand(want, "EXISTS", k); got != ":1" {
			t.Fatalf("%s not on %s", k, want)
		}
	}
	if _, body := h.admin("GET", "/config"); strings.Contains(body, "pw") && !strings.Contains(body, "<redacted>") {
		t.Errorf("/config shows the password:\n%s", body)
	}
	if _, s := h.admin("GET", "/status"); !strings.Contains(s, `"redis_shards"`) {
		t.Errorf("/status lacks shards:\n%s", s)
	}
	if v := h.metric(`attache_redis_requests_total{cluster="shards",result="ok",shard="shard0"}`); v == "" {
		t.Error("no per-shard request metric")
	}
}
