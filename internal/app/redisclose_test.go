package app

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
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
// builds a new pool; the old one hands its client to the new one and
// closes its connections to the shard, so reloads do not pile them up.
func TestRedisReloadClosesPools(t *testing.T) {
	t.Parallel()
	shard := testenv.Redis(t)
	h := start(t, redisCfg(shard, time.Second, "30s"), nil)
	ctx := context.Background()
	addr := h.addr("cache")
	first := redisClient(addr) // connected throughout
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
	// at most the current pool and one still closing
	perPool := runtime.GOMAXPROCS(0)
	eventually(t, 10*time.Second, "the dropped pools to close their shard connections", func() bool {
		return testenv.RedisClients(t, shard) <= 2*perPool
	})
	first.Close()
	eventually(t, 10*time.Second, "only the current pool to be left", func() bool {
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

// TestRedisReloadMovesClients: a reload that changes the Redis cluster
// (a new pool) breaks no client: clients pipelining INCRs and GETs
// through attache while the cluster changes, with a drain much shorter
// than the test, see no error and no connection closed (each dials once),
// and the replaced pools close their shard connections.
func TestRedisReloadMovesClients(t *testing.T) {
	t.Parallel()
	shard := testenv.Redis(t)
	h := start(t, redisCfg(shard, time.Second, "200ms"), nil)
	addr := h.addr("cache")
	const workers = 4
	var dials, done atomic.Int64
	stop := make(chan struct{})
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		c := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1,
			Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials.Add(1)
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}})
		defer c.Close()
		go func() { errs <- pipelineUntil(c, fmt.Sprint("moves", w), stop, &done) }()
	}
	progress := func(n int64) {
		from := done.Load()
		eventually(t, 10*time.Second, "the clients to finish more pipelines", func() bool { return done.Load() >= from+n })
	}
	progress(workers)
	dialled := dials.Load() // go-redis may open more than PoolSize at first
	perPool := runtime.GOMAXPROCS(0)
	current := fmt.Sprintf(`attache_redis_server_connections{cluster="shards",shard=%q}`, shard)
	for i := 1; i <= 3; i++ {
		h.rewrite(redisCfg(shard, time.Duration(i+1)*time.Second, "200ms"))
		if code, body := h.admin("POST", "/reload"); code != 200 {
			t.Fatalf("reload %d: %d %s", i, code, body)
		}
		// The clients are on the new pool and the old one has closed
		// its shard connections (before the fix: once the drain cut the
		// clients and they dialled again).
		eventually(t, 10*time.Second, "the clients on the new pool and the old pool closed", func() bool {
			return h.metric(current) != "0" && h.metric(current) != "" && testenv.RedisClients(t, shard) <= perPool
		})
		progress(2 * workers)
	}
	close(stop)
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Errorf("client: %v", err)
		}
	}
	if n := dials.Load(); n != dialled {
		t.Errorf("got %d client connections, want %d (none closed by the reloads)", n, dialled)
	}
}

// pipelineUntil pipelines INCRs and GETs of its own key until stop is
// closed, checking each reply; it counts the pipelines done.
func pipelineUntil(c *redis.Client, key string, stop <-chan struct{}, done *atomic.Int64) error {
	ctx := context.Background()
	if err := c.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("DEL %s: %w", key, err)
	}
	var want int64
	for i := 0; i < 100000; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		pipe := c.Pipeline()
		var incrs []*redis.IntCmd
		var gets []*redis.StringCmd
		for j := 0; j < 20; j++ {
			incrs = append(incrs, pipe.Incr(ctx, key))
			gets = append(gets, pipe.Get(ctx, key))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("pipeline %d of %s: %w", i, key, err)
		}
		for j := range incrs {
			want++
			if got := incrs[j].Val(); got != want {
				return fmt.Errorf("pipeline %d of %s: INCR got %d, want %d", i, key, got, want)
			}
			if got := gets[j].Val(); got != fmt.Sprint(want) {
				return fmt.Errorf("pipeline %d of %s: GET got %q, want %d", i, key, got, want)
			}
		}
		done.Add(1)
	}
	return nil
}

// TestRedisReloadRepointedListener: a reload that points a listener at
// another cluster, while its old cluster stays (changed, so with a new
// pool) for another listener, does not move the listener's clients to the
// old cluster's new pool: they stay on the old pool until the drain ends,
// and a new connection shards over the new cluster.
func TestRedisReloadRepointedListener(t *testing.T) {
	t.Parallel()
	a, b := testenv.Redis(t), testenv.Redis(t)
	cfg := func(cluster string, timeout time.Duration) string {
		return yamlf(`
drain_timeout: 200ms
listeners:
  - {name: cache, address: "127.0.0.1:0", protocol: redis, cluster: %s}
  - {name: other, address: "127.0.0.2:0", protocol: redis, cluster: a}
clusters:
  - name: a
    endpoints: ["%s"]
    redis: {server_connections: 1, timeout: %s}
  - name: b
    endpoints: ["%s"]
    redis: {server_connections: 1}
`, cluster, a, timeout, b)
	}
	h := start(t, cfg("a", time.Second), nil)
	ctx := context.Background()
	for addr, v := range map[string]string{a: "a", b: "b"} {
		c := redisClient(addr)
		if err := c.Set(ctx, "where", v, 0).Err(); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	old := redisClient(h.addr("cache"))
	defer old.Close()
	if got, err := old.Get(ctx, "where").Result(); got != "a" {
		t.Fatalf("before the reload: got %q (%v), want a", got, err)
	}
	h.rewrite(cfg("b", 2*time.Second))
	if code, body := h.admin("POST", "/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	// The old client's connection is cut when the drain ends: its next
	// command fails, or go-redis finds the connection closed and dials
	// anew, through the listener to cluster b. (Before the fix it moved to
	// cluster a's new pool and kept reading a's keys for good.)
	eventually(t, 10*time.Second, "the old client's connection closed by the drain", func() bool {
		got, err := old.Get(ctx, "where").Result()
		return err != nil || got == "b"
	})
	fresh := redisClient(h.addr("cache"))
	defer fresh.Close()
	if got, err := fresh.Get(ctx, "where").Result(); got != "b" {
		t.Fatalf("a new connection: got %q (%v), want b", got, err)
	}
}
