package redisproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/testenv"
)

// TestReplaceMovesClients: a pool replaced by another (a reload that
// changed the cluster) hands its clients to the new pool at command
// boundaries: a client pipelining INCRs and GETs and an idle client keep
// their connections, see no error, and the old pool closes (its shard
// connections and goroutines gone) long before its drain ends. The
// clients have authenticated to attache, and stay so on the new pool.
func TestReplaceMovesClients(t *testing.T) {
	goroutines := portable
	for _, tc := range []struct {
		name      string
		old, next func(*Options)
	}{
		{"engine", nil, nil},
		{"goroutines", goroutines, goroutines},
		// a new pool whose shards use TLS: no engine
		{"engine to goroutines", nil, goroutines},
	} {
		t.Run(tc.name, func(t *testing.T) { testReplaceMovesClients(t, tc.old, tc.next) })
	}
}

func testReplaceMovesClients(t *testing.T, viaOld, viaNext func(*Options)) {
	shard := testenv.Redis(t)
	old := pool(t, []string{shard}, viaOld)
	addr := serve(t, &Handler{Pool: old, Password: "secret", Log: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	var dials atomic.Int64
	newClient := func() *redis.Client {
		return redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1,
			Password: "secret", Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials.Add(1)
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}})
	}
	idle, busy := newClient(), newClient()
	defer idle.Close()
	defer busy.Close()
	if err := idle.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var done atomic.Int64
	stop, errc := make(chan struct{}), make(chan error, 1)
	go func() { errc <- pipelineUntil(busy, "replace", stop, &done) }()
	eventually(t, "the client to pipeline", func() bool { return done.Load() >= 2 })
	dialled := dials.Load()

	next := pool(t, []string{shard}, viaNext)
	closed := make(chan struct{})
	go func() { old.Replace(next, time.Minute); close(closed) }()
	eventually(t, "the replaced pool to close with its clients moved", func() bool {
		select {
		case <-closed:
			return true
		default:
			return false
		}
	})
	from := done.Load()
	eventually(t, "the client to pipeline on the new pool", func() bool { return done.Load() >= from+2 })
	close(stop)
	if err := <-errc; err != nil {
		t.Errorf("pipelining client: %v", err)
	}
	if err := idle.Ping(ctx).Err(); err != nil {
		t.Errorf("idle client: got %v, want PONG", err)
	}
	if n := dials.Load(); n != dialled {
		t.Errorf("got %d client connections, want %d (none closed by the replace)", n, dialled)
	}
	for _, sh := range old.Shards() {
		if sh.Connections != 0 {
			t.Errorf("the replaced pool has %d connections to %s, want 0", sh.Connections, sh.Addr)
		}
	}
	idle.Close()
	busy.Close()
	next.Close(time.Minute) // returns once the moved clients have left
	eventually(t, "the shard to see the pools' connections close", func() bool { return shardClients(t, shard) == 0 })
	if n := poolGoroutines(); n != 0 {
		t.Errorf("%d engine or server connection goroutines left after Close:\n%s", n, stacks())
	}
}

// pipelineUntil pipelines INCRs and GETs of key until stop is closed,
// checking each reply, and counts the pipelines done.
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
			return fmt.Errorf("pipeline %d: %w", i, err)
		}
		for j := range incrs {
			want++
			if got := incrs[j].Val(); got != want {
				return fmt.Errorf("pipeline %d: INCR got %d, want %d", i, got, want)
			}
			if got := gets[j].Val(); got != fmt.Sprint(want) {
				return fmt.Errorf("pipeline %d: GET got %q, want %d", i, got, want)
			}
		}
		done.Add(1)
	}
	return nil
}

// TestReplaceLateClient: a client the listener took for a pool that has
// been replaced and closed since (a TLS handshake may take a while) is
// served by the new pool, not closed.
func TestReplaceLateClient(t *testing.T) { forPaths(t, testReplaceLateClient) }

func testReplaceLateClient(t *testing.T, via func(*Options)) {
	shard := testenv.Redis(t)
	old, next := pool(t, []string{shard}, via), pool(t, []string{shard}, via)
	old.Replace(next, time.Minute) // no client: returns at once
	addr := serve(t, &Handler{Pool: old, Log: slog.New(slog.DiscardHandler)})
	rdb := client(addr)
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "late", "v", 0).Err(); err != nil {
		t.Fatalf("SET: got %v, want OK", err)
	}
	if v, err := rdb.Get(ctx, "late").Result(); err != nil || v != "v" {
		t.Errorf("GET: got %q %v, want \"v\"", v, err)
	}
}
