package app

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/testenv"
)

func redisCfg(shard string, timeout time.Duration, drain string) string {
	return yamlf(`
drain_timeout: %s
listeners:
  - {name: cache, address: "127.0.0.1:0", protocol: redis, cluster: shards}
clusters:
  - name: shards
    endpoints: ["%s"]
    redis: {server_connections: 1, timeout: %s}
`, drain, shard, timeout)
}

func redisClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1})
}

// TestRedisReloadClosesPools: each reload that changes the Redis cluster
// builds a new pool; the old one serves its client until it leaves and
// then closes its connections to the shard, so reloads do not pile them
// up.
func TestRedisReloadClosesPools(t *testing.T) {
	t.Parallel()
	shard := testenv.Redis(t)
	h := start(t, redisCfg(shard, time.Second, "30s"), nil)
	ctx := context.Background()
	addr := h.addr("cache")
	first := redisClient(addr) // stays on the first pool throughout
	defer first.Close()
	if err := first.Set(ctx, "k", "v0", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		h.rewrite(redisCfg(shard, time.Duration(i+1)*time.Second, "30s"))
		if code, body := h.admin("POST", "/reload"); code != 200 {
			t.Fatalf("reload %d: %d %s", i, code, body)
		}
		c := redisClient(addr)
		if err := c.Set(ctx, "k", fmt.Sprint("v", i), 0).Err(); err != nil {
			t.Fatalf("SET after reload %d: %v", i, err)
		}
		c.Close()
		if v, err := first.Get(ctx, "k").Result(); err != nil || v != fmt.Sprint("v", i) {
			t.Fatalf("the first client after reload %d: %q %v", i, v, err)
		}
	}
	// the first pool (its client is still there) and the current one
	perPool := runtime.GOMAXPROCS(0)
	eventually(t, 10*time.Second, "the dropped pools to close their shard connections", func() bool {
		return testenv.RedisClients(t, shard) <= 2*perPool
	})
	first.Close()
	eventually(t, 10*time.Second, "the first pool to close once its client left", func() bool {
		return testenv.RedisClients(t, shard) <= perPool
	})
}

// TestRedisShutdownCutsClients: at shutdown, once the drain is over, the
// Redis clients left are cut and the pool's shard connections closed.
func TestRedisShutdownCutsClients(t *testing.T) {
	t.Parallel()
	shard := testenv.Redis(t)
	var c *redis.Client
	t.Cleanup(func() { // after the app has stopped
		if err := c.Ping(context.Background()).Err(); err == nil {
			t.Error("a Redis client still served after shutdown")
		}
		c.Close()
		eventually(t, 10*time.Second, "the shard connections to close at shutdown", func() bool {
			return testenv.RedisClients(t, shard) == 0
		})
	})
	h := start(t, redisCfg(shard, time.Second, "100ms"), nil)
	c = redisClient(h.addr("cache"))
	if err := c.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
}
