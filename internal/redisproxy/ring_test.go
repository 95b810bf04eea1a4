package redisproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/hashkit"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// keyOn returns a key that p's ring puts on the shard at addr now.
func keyOn(t *testing.T, p *Pool, addr string) string {
	t.Helper()
	for i := range 100000 {
		k := fmt.Sprint("k", i)
		if s := p.shardFor([]byte(k)); s != nil && s.addr == addr {
			return k
		}
	}
	t.Fatalf("no key on %s", addr)
	return ""
}

// keyFor returns a key that a ketama ring over names (weight 1, all live)
// puts on names[want].
func keyFor(t *testing.T, names []string, want int) string {
	t.Helper()
	var ss []hashkit.Server
	for _, n := range names {
		ss = append(ss, hashkit.Server{Name: n, Weight: 1, Live: true})
	}
	ring, err := hashkit.Build("ketama", ss)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100000 {
		k := fmt.Sprint("d", i)
		if ring.Pick([]byte(k), hashkit.FNV1a_64, "{}") == want {
			return k
		}
	}
	t.Fatalf("no key on %s", names[want])
	return ""
}

// endpoint returns the cluster's endpoint at addr.
func endpoint(t *testing.T, c *upstream.Cluster, addr string) *upstream.Endpoint {
	t.Helper()
	for _, e := range c.Endpoints() {
		if e.Addr == addr {
			return e
		}
	}
	t.Fatalf("no endpoint %s", addr)
	return nil
}

// shardStatus returns the redis_shards entry of addr.
func shardStatus(t *testing.T, p *Pool, addr string) ShardStatus {
	t.Helper()
	for _, s := range p.Shards() {
		if s.Addr == addr {
			return s
		}
	}
	t.Fatalf("%s not in redis_shards: %+v", addr, p.Shards())
	return ShardStatus{}
}

// has reports whether the shard at addr holds key with value v.
func has(addr, key, v string) bool {
	got, err := testenv.RedisCommand(addr, "GET", key)
	return err == nil && got == fmt.Sprintf("$%d", len(v))
}

// TestEjectionIsTheEndpoints: with auto_eject_hosts, a shard that fails
// server_failure_limit times in a row is ejected on its upstream endpoint
// (where /status and the cluster's metrics read it) and leaves the ring:
// its keys go to the survivor. Once server_retry_timeout has passed and
// the shard is back, its keys go to it again.
func TestEjectionIsTheEndpoints(t *testing.T) { forPaths(t, testEjectionIsTheEndpoints) }

func testEjectionIsTheEndpoints(t *testing.T, via func(*Options)) {
	a := testenv.FreePort(t)
	stopA := testenv.RedisAt(t, a)
	b := testenv.Redis(t)
	ejected := make(chan string, 10)
	p := pool(t, []string{a, b}, via, func(o *Options) {
		o.AutoEject, o.ServerFailureLimit, o.ServerRetryTimeout = true, 2, 2*time.Second
		o.Observer.Ejected = func(shard string) { ejected <- shard }
	})
	rdb := client(serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}))
	defer rdb.Close()
	ctx := context.Background()
	onA := keyOn(t, p, a)
	if err := rdb.Set(ctx, onA, "first", 0).Err(); err != nil || !has(a, onA, "first") {
		t.Fatalf("SET %s with both shards up: %v", onA, err)
	}
	stopA()
	var err error
	for range 5 {
		if err = rdb.Set(ctx, onA, "moved", 0).Err(); err == nil {
			break
		}
	}
	if err != nil || !has(b, onA, "moved") {
		t.Fatalf("after ejection %s should be on the survivor: %v", onA, err)
	}
	ep := endpoint(t, p.up, a)
	if !ep.Ejected(time.Now()) {
		t.Error("the dead shard's upstream endpoint is not ejected")
	}
	if st := shardStatus(t, p, a); !st.Ejected || st.InRing {
		t.Errorf("redis_shards of the dead shard: %+v, want ejected and out of the ring", st)
	}
	if len(ejected) != 1 || <-ejected != a {
		t.Errorf("ejections observed: want one, of %s", a)
	}

	testenv.RedisAt(t, a) // back, on the same address
	deadline := time.Now().Add(15 * time.Second)
	for !has(a, onA, "back") {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not go back to its shard after server_retry_timeout", onA)
		}
		time.Sleep(50 * time.Millisecond)
		rdb.Set(ctx, onA, "back", 0)
	}
	if st := shardStatus(t, p, a); !st.InRing {
		t.Errorf("redis_shards of the shard back: %+v, want in the ring", st)
	}
}

// TestHealthCheckTakesShardOut: with auto_eject_hosts, a shard whose
// active health check fails leaves the ring though it still serves, and
// comes back when the check passes; without, it stays and keeps its keys.
// (Before the shards were the cluster's endpoints a health check only
// reported.)
func TestHealthCheckTakesShardOut(t *testing.T) { forPaths(t, testHealthCheckTakesShardOut) }

func testHealthCheckTakesShardOut(t *testing.T, via func(*Options)) {
	a, b := testenv.Redis(t), testenv.Redis(t)
	th := upstream.Thresholds{Healthy: 1, Unhealthy: 1}
	ctx := context.Background()
	for _, eject := range []bool{true, false} {
		t.Run(fmt.Sprint("auto_eject_hosts=", eject), func(t *testing.T) {
			p := pool(t, []string{a, b}, via, func(o *Options) { o.AutoEject = eject })
			rdb := client(serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}))
			defer rdb.Close()
			onA := keyOn(t, p, a)
			ep := endpoint(t, p.up, a)
			ep.ObserveCheck(false, th) // what health.Run does with a failed check
			if st := shardStatus(t, p, a); st.Health != "unhealthy" || st.InRing != !eject {
				t.Errorf("redis_shards after a failed check: %+v", st)
			}
			v := fmt.Sprint("unhealthy-", eject)
			if err := rdb.Set(ctx, onA, v, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if on := map[bool]string{true: b, false: a}[eject]; !has(on, onA, v) {
				t.Errorf("%s with its shard failing checks: not on %s", onA, on)
			}
			ep.ObserveCheck(true, th)
			v = fmt.Sprint("healthy-", eject)
			if err := rdb.Set(ctx, onA, v, 0).Err(); err != nil || !has(a, onA, v) {
				t.Errorf("%s once its shard passes again: not on it (%v)", onA, err)
			}
		})
	}
}

// TestDiscoveryRebuildsRing: the cluster's endpoint set changing (as
// discovery reports) rebuilds the ring as nutcracker keys it, by name when
// given, else host:port: an added shard takes its keys, and a removed
// one's keys go to the others and its connections close.
func TestDiscoveryRebuildsRing(t *testing.T) { forPaths(t, testDiscoveryRebuildsRing) }

func testDiscoveryRebuildsRing(t *testing.T, via func(*Options)) {
	a, b, c := testenv.Redis(t), testenv.Redis(t), testenv.Redis(t)
	p := pool(t, []string{a, b}, via)
	rdb := client(serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}))
	defer rdb.Close()
	ctx := context.Background()
	set := func(k, v, want string) {
		t.Helper()
		if err := rdb.Set(ctx, k, v, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		if !has(want, k, v) {
			t.Errorf("%s=%s not on %s", k, v, want)
		}
	}
	onB := keyOn(t, p, b)
	set(onB, "two", b)

	// c added, named: a ring over a, b and "gamma" (a name is what is hashed)
	p.up.SetEndpoints([]upstream.Target{{Addr: a, Weight: 1}, {Addr: b, Weight: 1}, {Addr: c, Weight: 1, Name: "gamma"}})
	toC := keyFor(t, []string{a, b, "gamma"}, 2)
	set(toC, "three", c)
	if n := len(p.Shards()); n != 3 {
		t.Errorf("redis_shards: %d, want 3", n)
	}

	// b removed: its keys go where a ring over a and gamma puts them
	p.up.SetEndpoints([]upstream.Target{{Addr: a, Weight: 1}, {Addr: c, Weight: 1, Name: "gamma"}})
	want := []string{a, c}[keyOnRing(t, []string{a, "gamma"}, onB)]
	set(onB, "moved", want)
	deadline := time.Now().Add(10 * time.Second)
	for testenv.RedisClients(t, b) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connections to the removed shard still open: %d", testenv.RedisClients(t, b))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range p.Shards() {
		if s.Addr == b {
			t.Errorf("removed shard still in redis_shards: %+v", p.Shards())
		}
	}
}

// keyOnRing returns the position of names a ketama ring puts key on.
func keyOnRing(t *testing.T, names []string, key string) int {
	var ss []hashkit.Server
	for _, n := range names {
		ss = append(ss, hashkit.Server{Name: n, Weight: 1, Live: true})
	}
	ring, err := hashkit.Build("ketama", ss)
	if err != nil {
		t.Fatal(err)
	}
	return ring.Pick([]byte(key), hashkit.FNV1a_64, "{}")
}

// TestRemovedShardInFlight: a command in flight to a shard that leaves
// the cluster fails with an error naming the shard; the client stays.
func TestRemovedShardInFlight(t *testing.T) { forPaths(t, testRemovedShardInFlight) }

func testRemovedShardInFlight(t *testing.T, via func(*Options)) {
	a, b := testenv.Redis(t), testenv.Redis(t)
	p := pool(t, []string{a, b}, via, func(o *Options) { o.Timeout = 0 })
	rdb := client(serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}))
	defer rdb.Close()
	ctx := context.Background()
	onB := keyOn(t, p, b)
	admin := redis.NewClient(&redis.Options{Addr: b, Protocol: 2, DisableIdentity: true})
	defer admin.Close()
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "10000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	defer admin.Do(ctx, "CLIENT", "UNPAUSE")
	res := make(chan error, 1)
	go func() { res <- rdb.Set(ctx, onB, "held", 0).Err() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := admin.Info(ctx, "clients").Result()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(info, "blocked_clients:0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the SET was not held by CLIENT PAUSE within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.up.SetEndpoints([]upstream.Target{{Addr: a, Weight: 1}})
	p.shardFor([]byte("any")) // the next command notices
	select {
	case err := <-res:
		if err == nil || !strings.Contains(err.Error(), "left the cluster") {
			t.Errorf("SET in flight on the removed shard: %v, want an error saying it left the cluster", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SET in flight on the removed shard still waiting")
	}
	if err := rdb.Set(ctx, onB, "v", 0).Err(); err != nil || !has(a, onB, "v") {
		t.Errorf("after the removal %s should go to the survivor: %v", onB, err)
	}
}

// TestDuplicateRingName: discovery reporting two shards of one ring name
// (which a static list refuses) leaves the later one out of the ring.
func TestDuplicateRingName(t *testing.T) {
	a, b := testenv.Redis(t), testenv.Redis(t)
	p := pool(t, nil, func(o *Options) {
		o.Upstream = cluster(upstream.Target{Addr: a, Weight: 1, Name: "same"}, upstream.Target{Addr: b, Weight: 1, Name: "same"})
	})
	for i := range 200 {
		if s := p.shardFor([]byte(fmt.Sprint("k", i))); s == nil || s.addr != a {
			t.Fatalf("key k%d on %v, want every key on the first shard named \"same\"", i, s)
		}
	}
	if st := shardStatus(t, p, b); st.InRing {
		t.Errorf("redis_shards of the later duplicate: %+v, want out of the ring", st)
	}
}

// TestShardDialsThroughCluster: shard connections are made by the
// cluster (its Dial, connect_timeout and TLS), and a failed one is the
// cluster's connect error (attache_cluster_connect_errors_total in app).
func TestShardDialsThroughCluster(t *testing.T) { forPaths(t, testShardDialsThroughCluster) }

func testShardDialsThroughCluster(t *testing.T, via func(*Options)) {
	live, dead := testenv.Redis(t), testenv.FreePort(t)
	dials := make(chan string, 100)
	failed := make(chan string, 100)
	c := upstream.New(upstream.Options{Name: "shards", ConnectTimeout: time.Second, Log: slog.New(slog.DiscardHandler),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials <- addr
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		Observer: upstream.Observer{ConnectError: func(e *upstream.Endpoint, _ error) { failed <- e.Addr }}})
	c.SetEndpoints([]upstream.Target{{Addr: live, Weight: 1}, {Addr: dead, Weight: 1}})
	p := pool(t, nil, via, func(o *Options) { o.Upstream, o.Timeout = c, 0 })
	rdb := client(serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}))
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, keyOn(t, p, live), "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if len(dials) == 0 || <-dials != live {
		t.Error("the shard connection was not dialled by the cluster")
	}
	if err := rdb.Set(ctx, keyOn(t, p, dead), "v", 0).Err(); err == nil {
		t.Fatal("SET to a shard with nothing listening worked")
	}
	if len(failed) == 0 || <-failed != dead {
		t.Error("the failed dial is not the cluster's connect error")
	}
}
