package redisproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/hashkit"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// serve runs a Handler on a loopback listener.
func serve(t *testing.T, h *Handler) string {
	return testenv.Serve(t, nil, func(c net.Conn) { h.ServeConn(context.Background(), c) })
}

// pool builds a Pool of shards, on event loops of the test's own (the
// engine, as in production) unless a mod takes them away (portable).
func pool(t testing.TB, shards []string, mods ...func(*Options)) *Pool {
	g := evloop.NewGroup(0)
	t.Cleanup(g.Close) // after the pool's Close, added below
	o := Options{Cluster: "shards", Hash: "fnv1a_64", Distribution: "ketama", HashTag: "{}", ServerFailureLimit: 2,
		ServerRetryTimeout: 30 * time.Second, ServerConnections: 2, Timeout: time.Second, ConnectTimeout: time.Second,
		Log: slog.New(slog.DiscardHandler), Loops: g}
	var ts []upstream.Target
	for _, s := range shards {
		ts = append(ts, upstream.Target{Addr: s, Weight: 1})
	}
	o.Upstream = cluster(ts...)
	for _, mod := range mods {
		if mod != nil {
			mod(&o)
		}
	}
	p, err := NewPool(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(0) })
	return p
}

// cluster returns an upstream cluster of the shards ts, as app makes one
// of a cluster's static endpoints.
func cluster(ts ...upstream.Target) *upstream.Cluster { return tlsCluster(nil, ts...) }

// tlsCluster is cluster with the shards reached through TLS (tlsFor nil:
// plaintext).
func tlsCluster(tlsFor func(string) *tls.Config, ts ...upstream.Target) *upstream.Cluster {
	c := upstream.New(upstream.Options{Name: "shards", ConnectTimeout: time.Second, TLS: tlsFor, Log: slog.New(slog.DiscardHandler)})
	c.SetEndpoints(ts)
	return c
}

// forPaths runs a test against both ways of serving clients: the epoll
// engine (where there is one) and the portable path (goroutines).
func forPaths(t *testing.T, test func(t *testing.T, via func(*Options))) {
	t.Run("engine", func(t *testing.T) { test(t, nil) })
	t.Run("goroutines", func(t *testing.T) { test(t, portable) })
}

// portable takes a pool's loops away: its clients take the portable path.
func portable(o *Options) { o.Loops = nil }

func client(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
}

func TestShardingPipeliningAndFanout(t *testing.T) { forPaths(t, testShardingPipeliningAndFanout) }

func testShardingPipeliningAndFanout(t *testing.T, via func(*Options)) {
	shards := []string{testenv.Redis(t), testenv.Redis(t), testenv.Redis(t)}
	p := pool(t, shards, via)
	addr := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	rdb := client(addr)
	defer rdb.Close()

	// The keys: key:0 to key:999, and one more for any shard none of
	// them hashes to (FNV-1a spreads such alike keys over part of the
	// ring only, so with some port numbers a shard gets none of them).
	ring, _ := hashkit.Build("ketama", []hashkit.Server{{Name: shards[0], Weight: 1, Live: true}, {Name: shards[1], Weight: 1, Live: true}, {Name: shards[2], Weight: 1, Live: true}})
	shardOf := func(k string) int { return ring.Pick([]byte(k), hashkit.FNV1a_64, "{}") }
	var all []string
	perShard := make([]int, 3)
	for i := 0; i < 1000; i++ {
		k := fmt.Sprintf("key:%d", i)
		all = append(all, k)
		perShard[shardOf(k)]++
	}
	for s := range perShard {
		for i := 0; perShard[s] == 0 && i < 100000; i++ {
			if k := fmt.Sprintf("extra:%d", i); shardOf(k) == s {
				all = append(all, k)
				perShard[s]++
			}
		}
		if perShard[s] == 0 {
			t.Fatalf("no key found for shard %d", s)
		}
	}

	// a pipeline of SETs and GETs (2,000 and more) comes back in order
	pipe := rdb.Pipeline()
	var gets []*redis.StringCmd
	for i, k := range all {
		pipe.Set(ctx, k, fmt.Sprint("v", i), 0)
		gets = append(gets, pipe.Get(ctx, k))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	for i, g := range gets {
		if g.Val() != fmt.Sprint("v", i) {
			t.Fatalf("%s: got %q", all[i], g.Val())
		}
	}
	// every key is on the shard hashkit says, and on no other
	for _, k := range all {
		want := shardOf(k)
		for s, sa := range shards {
			got, _ := testenv.RedisCommand(sa, "EXISTS", k)
			if (got == ":1") != (s == want) {
				t.Fatalf("%s: EXISTS on shard %d = %s, want it only on shard %d", k, s, got, want)
			}
		}
	}

	keys := []string{"key:1", "key:2", "missing", "key:3", "key:999"}
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(vals) != "[v1 v2 <nil> v3 v999]" {
		t.Errorf("MGET across shards: got %v", vals)
	}
	if n, _ := rdb.Exists(ctx, keys...).Result(); n != 4 {
		t.Errorf("EXISTS: got %d, want 4", n)
	}
	if err := rdb.MSet(ctx, "m:1", "a", "m:2", "b", "m:3", "c", "m:4", "d").Err(); err != nil {
		t.Fatal(err)
	}
	if v, _ := rdb.MGet(ctx, "m:1", "m:2", "m:3", "m:4").Result(); fmt.Sprint(v) != "[a b c d]" {
		t.Errorf("MSET then MGET: %v", v)
	}
	if n, _ := rdb.Del(ctx, "m:1", "m:2", "m:3", "m:4", "nope").Result(); n != 4 {
		t.Errorf("DEL: got %d, want 4", n)
	}
	// hash tags keep multi-key commands on one shard
	rdb.SAdd(ctx, "{u1}:a", "x", "y")
	rdb.SAdd(ctx, "{u1}:b", "y", "z")
	if v, err := rdb.SInter(ctx, "{u1}:a", "{u1}:b").Result(); err != nil || fmt.Sprint(v) != "[y]" {
		t.Errorf("SINTER with a tag: %v %v", v, err)
	}
	other := "key:2"
	for i := 2; p.shardFor([]byte(other)) == p.shardFor([]byte("key:1")); i++ {
		other = fmt.Sprint("key:", i)
	}
	if err := rdb.SInter(ctx, "key:1", other).Err(); err == nil || !strings.Contains(err.Error(), "different shards") {
		t.Errorf("SINTER across shards: got %v", err)
	}
	// scripts route by their first key
	if v, err := rdb.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"key:7"}).Result(); err != nil || v != "v7" {
		t.Errorf("EVAL: %v %v", v, err)
	}
	// unsupported commands are errors naming them, and the connection lives on
	for _, cmd := range [][]any{{"MULTI"}, {"KEYS", "*"}, {"BLPOP", "l", 1}, {"SUBSCRIBE", "c"}, {"SELECT", 1}, {"OBJECT", "ENCODING", "k"}} {
		err := rdb.Do(ctx, cmd...).Err()
		if err == nil || !strings.Contains(err.Error(), "attache") {
			t.Errorf("%v: got %v, want an attache error", cmd, err)
		}
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after errors: %v", err)
	}
	if v, _ := rdb.Echo(ctx, "hi").Result(); v != "hi" {
		t.Errorf("ECHO: %q", v)
	}
}

func TestAuthAndMalformed(t *testing.T) { forPaths(t, testAuthAndMalformed) }

func testAuthAndMalformed(t *testing.T, via func(*Options)) {
	shards := []string{testenv.Redis(t), testenv.Redis(t)}
	addr := serve(t, &Handler{Pool: pool(t, shards, via), Password: "s3cret", Log: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	if err := client(addr).Get(ctx, "k").Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("without AUTH: %v", err)
	}
	good := redis.NewClient(&redis.Options{Addr: addr, Password: "s3cret", DisableIdentity: true})
	defer good.Close()
	if err := good.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Errorf("with AUTH (go-redis, HELLO 3 refused, falls back): %v", err)
	}
	bad := redis.NewClient(&redis.Options{Addr: addr, Password: "wrong", Protocol: 2, DisableIdentity: true})
	defer bad.Close()
	if err := bad.Get(ctx, "k").Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("wrong password: %v", err)
	}
	// a malformed command gets a protocol error; other clients are fine
	c, _ := net.Dial("tcp", addr)
	c.Write([]byte("*2\r\n$3\r\nGET\r\n$x\r\n"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 128)
	n, _ := c.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "-ERR Protocol error") {
		t.Errorf("malformed: got %q", buf[:n])
	}
	c.Close()
	if v, err := good.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Errorf("other client after a malformed one: %q %v", v, err)
	}
}

// TestDeadShard: a dead shard's keys get -ERR naming the shard, others
// work; with auto_eject_hosts the dead shard leaves the ring after
// server_failure_limit failures and its keys move.
func TestDeadShard(t *testing.T) { forPaths(t, testDeadShard) }

func testDeadShard(t *testing.T, via func(*Options)) {
	a, stopA := testenv.RedisProc(t)
	b := testenv.Redis(t)
	ctx := context.Background()
	for _, eject := range []bool{false, true} {
		p := pool(t, []string{a, b}, via, func(o *Options) { o.AutoEject = eject; o.ServerFailureLimit = 2 })
		addr := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})
		rdb := client(addr)
		defer rdb.Close()
		// find a key on each shard
		var onA, onB string
		for i := 0; onA == "" || onB == ""; i++ {
			k := fmt.Sprint("k", i)
			if p.shardFor([]byte(k)).addr == a {
				onA = k
			} else {
				onB = k
			}
		}
		if !eject {
			stopA()
		}
		err := rdb.Set(ctx, onA, "x", 0).Err()
		if eject {
			continue // set up below
		}
		if err == nil || !strings.Contains(err.Error(), "shard") {
			t.Errorf("key on the dead shard: got %v, want an error naming the shard", err)
		}
		if err := rdb.Set(ctx, onB, "y", 0).Err(); err != nil {
			t.Errorf("key on the live shard: %v", err)
		}
		_ = onB
	}
	// with ejection (a is dead now)
	p := pool(t, []string{a, b}, via, func(o *Options) { o.AutoEject = true; o.ServerFailureLimit = 2 })
	addr := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})
	rdb := client(addr)
	defer rdb.Close()
	var onA string
	for i := 0; onA == ""; i++ {
		if k := fmt.Sprint("k", i); p.shardFor([]byte(k)).addr == a {
			onA = k
		}
	}
	var last error
	for i := 0; i < 5; i++ {
		last = rdb.Set(ctx, onA, "moved", 0).Err()
	}
	if last != nil {
		t.Fatalf("after ejection the key should move to the live shard: %v", last)
	}
	if got, _ := testenv.RedisCommand(b, "GET", onA); got != "$5" {
		t.Errorf("ejected shard's key not on the survivor: %q", got)
	}
}

// TestShardKilledUnderLoad: while eight go-redis workers run, one shard is
// killed by its PID. Commands for its keys fail with an -ERR naming it;
// commands for the other shards never fail, and no client connection is
// dropped.
func TestShardKilledUnderLoad(t *testing.T) { forPaths(t, testShardKilledUnderLoad) }

func testShardKilledUnderLoad(t *testing.T, via func(*Options)) {
	a, stopA := testenv.RedisProc(t)
	b, c := testenv.Redis(t), testenv.Redis(t)
	p := pool(t, []string{a, b, c}, via)
	addr := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})
	rdb := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 8})
	defer rdb.Close()
	ctx := context.Background()
	var mu sync.Mutex
	var liveErrs, deadErrs, deadOK int
	var firstLive error
	var wg sync.WaitGroup
	end := time.Now().Add(2 * time.Second)
	killed := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				k := fmt.Sprintf("w%d:%d", w, i)
				onDead := p.shardFor([]byte(k)).addr == a
				err := rdb.Set(ctx, k, "v", 0).Err()
				select {
				case <-killed:
				default:
					continue // before the kill everything works; counted below only after
				}
				mu.Lock()
				switch {
				case onDead && err != nil:
					deadErrs++
					if !strings.Contains(err.Error(), a) {
						t.Errorf("error for a dead-shard key does not name the shard: %v", err)
					}
				case onDead:
					deadOK++
				case err != nil:
					liveErrs++
					if firstLive == nil {
						firstLive = err
					}
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(600 * time.Millisecond)
	stopA()
	close(killed)
	wg.Wait()
	if liveErrs > 0 {
		t.Errorf("%d commands for live shards failed after the kill; first: %v", liveErrs, firstLive)
	}
	if deadErrs == 0 {
		t.Errorf("no command for the dead shard failed (%d succeeded)", deadOK)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Errorf("client connection after the kill: %v", err)
	}
}

// TestTimeoutAndLargeValues: a shard that accepts but never replies gets
// its commands an -ERR naming it after the timeout, and the client
// connection lives on; values larger than every buffer pass whole; a
// client that half-closes after its commands still gets every reply, and
// QUIT gets +OK before the close; each request is observed once.
func TestTimeoutAndLargeValues(t *testing.T) { forPaths(t, testTimeoutAndLargeValues) }

func testTimeoutAndLargeValues(t *testing.T, via func(*Options)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for _, err := c.Read(buf); err == nil; _, err = c.Read(buf) {
				}
			}()
		}
	}()
	silent, live := ln.Addr().String(), testenv.Redis(t)
	var mu sync.Mutex
	observed := map[string]int{}
	observe := func(o *Options) {
		o.Observer.Request = func(shard string) func(bool, time.Duration) {
			return func(ok bool, _ time.Duration) { mu.Lock(); observed[fmt.Sprint(shard, ok)]++; mu.Unlock() }
		}
	}
	p := pool(t, []string{silent, live}, via, observe, func(o *Options) { o.Timeout = 200 * time.Millisecond })
	rdb := client(serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}))
	defer rdb.Close()
	ctx := context.Background()
	onSilent := ""
	for i := 0; onSilent == ""; i++ {
		if k := fmt.Sprint("k", i); p.shardFor([]byte(k)).addr == silent {
			onSilent = k
		}
	}
	if err := rdb.Get(ctx, onSilent).Err(); err == nil || !strings.Contains(err.Error(), silent) {
		t.Errorf("GET on a silent shard: got %v, want an -ERR naming %s", err, silent)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after a timeout: %v", err)
	}

	// large values, on a pool whose timeout a slow (race-instrumented,
	// loaded) run cannot reach
	p = pool(t, []string{live}, via, observe, func(o *Options) { o.Timeout = time.Minute })
	addr := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})
	rdb = client(addr)
	defer rdb.Close()
	onLive := "k"
	big := strings.Repeat("x", 3<<20)
	if err := rdb.Set(ctx, onLive, big, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := rdb.Get(ctx, onLive).Result(); err != nil || v != big {
		t.Errorf("3 MiB value back: %d bytes, %v", len(v), err)
	}
	mu.Lock()
	if observed[silent+"false"] != 1 || observed[live+"true"] != 2 {
		t.Errorf("observed %v, want one failure on %s and two successes on %s", observed, silent, live)
	}
	mu.Unlock()

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("PING\r\n*2\r\n$3\r\nGET\r\n$" + fmt.Sprint(len(onLive)) + "\r\n" + onLive + "\r\n*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if engine := len(p.engines.all) > 0; engine != (via == nil && runtime.GOOS == "linux") {
		t.Errorf("served by an engine: %v", engine)
	}
	want := "+PONG\r\n$" + fmt.Sprint(len(big)) + "\r\n" + big + "\r\n+OK\r\n"
	if string(got) != want {
		t.Errorf("PING, GET, QUIT, PING then half-close: got %d bytes (%.40q...), want %d (no reply after QUIT)", len(got), got, len(want))
	}
}
