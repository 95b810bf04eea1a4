package app

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/testenv"
)

// TestRedisClusterTLS: a redis cluster's tls block is honoured end to end:
// the shards speak TLS only (no plain port), verified against the
// cluster's CA with a client certificate, and the redis health check goes
// through the same TLS (the listener becomes ready only if it does).
func TestRedisClusterTLS(t *testing.T) {
	t.Parallel()
	r0 := testenv.StartRedisTLS(t, "127.0.0.1", true)
	r1 := testenv.StartRedisTLS(t, "127.0.0.1", true)
	// The two servers have their own CAs; the cluster trusts r0's only.
	h := start(t, yamlf(`
listeners:
  - {name: cache, address: "127.0.0.1:0", protocol: redis, cluster: shards}
clusters:
  - name: shards
    endpoints: ["%s:1 shard0", "%s:1 shard1"]
    health_check: {type: redis, interval: 200ms, timeout: 150ms}
    tls: {ca_file: %s, cert_file: %s, key_file: %s}
    redis: {hash: fnv1a_64, distribution: ketama}
`, r0.Addr, r1.Addr, r0.CAFile, r0.CertFile, r0.KeyFile), nil)
	// shard1 is verified against r0's CA: its handshake fails, so its
	// health check must fail too, while shard0's passes.
	for addr, want := range map[string]string{r0.Addr: "1", r1.Addr: "0"} {
		m := `attache_cluster_endpoint_healthy{cluster="shards",endpoint="` + addr + `"}`
		eventually(t, 10*time.Second, m+" "+want, func() bool { return h.metric(m) == want })
	}
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: h.addr("cache"), DisableIdentity: true, MaxRetries: -1})
	defer rdb.Close()
	ok, refused := 0, 0
	for i := range 40 {
		switch err := rdb.Set(ctx, fmt.Sprint("key:", i), i, 0).Err(); {
		case err == nil:
			ok++
		default:
			refused++
		}
	}
	if ok == 0 || refused == 0 {
		t.Fatalf("SET through TLS shards: %d ok, %d refused; want some of each (shard0 verified, shard1 not)", ok, refused)
	}
	if got, err := testenv.RedisCommand(r0.Addr, "PING"); err == nil {
		t.Fatalf("plain PING to the TLS-only shard: got %q, want no answer", got)
	}
}
