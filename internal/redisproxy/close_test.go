package redisproxy

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/testenv"
)

// TestCloseDrains: a closed pool keeps serving the client it has, its
// pipelines included, until the client leaves; then its server
// connections are gone from the shard and its goroutines have ended. A
// client that comes after is closed at once.
func TestCloseDrains(t *testing.T) { forPaths(t, testCloseDrains) }

func testCloseDrains(t *testing.T, via func(*Options)) {
	shard := testenv.Redis(t)
	p := pool(t, []string{shard}, via)
	addr := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1})
	defer rdb.Close()
	pipeline(t, rdb, "before")
	if n := shardClients(t, shard); n == 0 {
		t.Fatal("the shard has no connection from the pool")
	}

	closed := make(chan struct{})
	go func() { p.Close(time.Minute); close(closed) }()
	for i := 0; i < 3; i++ {
		pipeline(t, rdb, fmt.Sprint("draining", i))
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a client was still connected")
	default:
	}
	rdb.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s of the last client leaving")
	}
	eventually(t, "the shard to see the pool's connections close", func() bool { return shardClients(t, shard) == 0 })
	if n := poolGoroutines(); n != 0 {
		t.Errorf("%d engine or server connection goroutines left after Close:\n%s", n, stacks())
	}
	for _, e := range p.engines.all {
		select {
		case <-e.done:
		default:
			t.Error("an engine has not stopped")
		}
	}
	late := client(addr)
	defer late.Close()
	if err := late.Ping(ctx).Err(); err == nil {
		t.Error("a client that came after Close was served")
	}
	p.Close(0) // a second call returns
}

// TestCloseDeadline: at the end of the drain the clients left are cut and
// Close returns.
func TestCloseDeadline(t *testing.T) { forPaths(t, testCloseDeadline) }

func testCloseDeadline(t *testing.T, via func(*Options)) {
	shard := testenv.Redis(t)
	p := pool(t, []string{shard}, via)
	addr := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})
	rdb := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1})
	defer rdb.Close()
	pipeline(t, rdb, "before")
	p.Close(0)
	if err := rdb.Get(context.Background(), "k1").Err(); err == nil {
		t.Error("a client of a closed pool still served after the deadline")
	}
	eventually(t, "the shard to see the pool's connections close", func() bool { return shardClients(t, shard) == 0 })
	if n := poolGoroutines(); n != 0 {
		t.Errorf("%d engine or server connection goroutines left after Close:\n%s", n, stacks())
	}
}

// pipeline sets and gets 100 keys in one pipeline.
func pipeline(t *testing.T, rdb *redis.Client, tag string) {
	t.Helper()
	ctx := context.Background()
	pipe := rdb.Pipeline()
	var gets []*redis.StringCmd
	for i := 0; i < 100; i++ {
		pipe.Set(ctx, fmt.Sprint("k", i), tag+fmt.Sprint(i), 0)
		gets = append(gets, pipe.Get(ctx, fmt.Sprint("k", i)))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("pipeline %s: %v", tag, err)
	}
	for i, g := range gets {
		if g.Val() != tag+fmt.Sprint(i) {
			t.Fatalf("pipeline %s: k%d is %q", tag, i, g.Val())
		}
	}
}

func shardClients(t *testing.T, shard string) int { return testenv.RedisClients(t, shard) }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stacks() string {
	b := make([]byte, 1<<20)
	return string(b[:runtime.Stack(b, true)])
}

// poolGoroutines counts the goroutines of engines and server connections
// (the tests of this package run one at a time and close their pools):
// those running one of their functions, not those they created that are
// already exiting (a reader that sent its last error, in goexit).
func poolGoroutines() int {
	n := 0
	for _, g := range strings.Split(stacks(), "\n\n") {
		if i := strings.Index(g, "\ncreated by "); i >= 0 {
			g = g[:i]
		}
		if strings.Contains(g, "redisproxy.(*engine).run") || strings.Contains(g, "redisproxy.(*serverConn).run") ||
			strings.Contains(g, "redisproxy.(*engine).dial") {
			n++
		}
	}
	return n
}
