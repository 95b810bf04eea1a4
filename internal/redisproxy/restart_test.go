package redisproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/testenv"
)

// TestShardRestartUnderLoad: a shard shut down gracefully and started again
// on the same port, under pipelined GETs from go-redis (which does not
// retry here), costs the application no failed GET: read-only commands in
// flight on the connection the shard closed are sent once more, and
// requests that meet a refused dial wait for the shard to be back. INCRs
// that were in flight fail rather than being sent twice: the counter ends
// between the acknowledged INCRs and those plus the failed ones.
func TestShardRestartUnderLoad(t *testing.T) { forPaths(t, testShardRestartUnderLoad) }

func testShardRestartUnderLoad(t *testing.T, via func(*Options)) {
	if testing.Short() {
		t.Skip("restarts a redis-server under load")
	}
	addr := testenv.FreePort(t)
	// The counter must survive the restart: an AOF written before each
	// reply, and on shutdown.
	args := []string{"--dir", t.TempDir(), "--appendonly", "yes", "--appendfsync", "always"}
	stop := testenv.RedisAt(t, addr, args...)
	p := pool(t, []string{addr}, via, func(o *Options) {
		o.Timeout = 20 * time.Second // the restart must fit in the redial window, however loaded the machine
	})
	proxy := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	const keys = 200
	seed := client(proxy)
	defer seed.Close()
	for i := range keys {
		if err := seed.Set(ctx, fmt.Sprint("k", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	var (
		batches, getFailures, incrAcked, incrFailed atomic.Int64
		firstErr                                    atomic.Value
		done                                        = make(chan struct{})
		wg                                          sync.WaitGroup
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rdb := client(proxy)
			defer rdb.Close()
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				pipe := rdb.Pipeline()
				cmds := make([]*redis.StringCmd, 50)
				for j := range cmds {
					cmds[j] = pipe.Get(ctx, fmt.Sprint("k", (g*50+n+j)%keys))
				}
				pipe.Exec(ctx)
				for j, c := range cmds {
					if v, err := c.Result(); err != nil || v != strconv.Itoa((g*50+n+j)%keys) {
						getFailures.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Sprintf("GET: %q %v", v, err))
					}
				}
				batches.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rdb := client(proxy)
		defer rdb.Close()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := rdb.Incr(ctx, "counter").Err(); err != nil {
				incrFailed.Add(1)
			} else {
				incrAcked.Add(1)
			}
		}
	}()
	waitBatches := func(what string, n int64) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for batches.Load() < n {
			if time.Now().After(deadline) {
				close(done)
				wg.Wait()
				t.Fatalf("%s: %d batches of GETs within 60s, want %d", what, batches.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitBatches("before the restart", 100)
	stop() // SIGTERM: Redis's graceful shutdown; waits for the exit
	testenv.RedisAt(t, addr, args...)
	waitBatches("after the restart", batches.Load()+100)
	close(done)
	wg.Wait()

	if n := getFailures.Load(); n > 0 {
		t.Errorf("failed GETs across the restart: got %d of %d, want 0; first: %v", n, 50*batches.Load(), firstErr.Load())
	}
	v := counterValue(t, addr)
	acked, failed := incrAcked.Load(), incrFailed.Load()
	if v < acked || v > acked+failed {
		t.Errorf("counter: got %d, want between %d acknowledged INCRs and %d (with the %d failed ones)", v, acked, acked+failed, failed)
	}
	t.Logf("%d GET batches of 50, %d INCRs acknowledged, %d failed, counter %d", batches.Load(), acked, failed, v)
}

// counterValue reads the counter straight from the shard.
func counterValue(t *testing.T, addr string) int64 {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true})
	defer rdb.Close()
	v, err := rdb.Get(context.Background(), "counter").Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	return v
}

// TestClosedBeforeReply: the shard closes a connection that holds a
// pipelined INCR and GET it has not run (CLIENT PAUSE WRITE holds the
// INCR, and the GET behind it; CLIENT KILL closes the connection). The GET
// is sent again on a new connection and answered; the INCR fails and is
// not sent again: the counter is untouched.
func TestClosedBeforeReply(t *testing.T) { forPaths(t, testClosedBeforeReply) }

func testClosedBeforeReply(t *testing.T, via func(*Options)) {
	shard := testenv.Redis(t)
	p := pool(t, []string{shard}, via)
	rdb := client(serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}))
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(&redis.Options{Addr: shard, Protocol: 2, DisableIdentity: true})
	defer admin.Close()
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "10000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	defer admin.Do(ctx, "CLIENT", "UNPAUSE")
	type result struct {
		incr error
		get  string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		pipe := rdb.Pipeline()
		incr := pipe.Incr(ctx, "counter")
		get := pipe.Get(ctx, "k")
		pipe.Exec(ctx)
		v, err := get.Result()
		res <- result{incr.Err(), v, err}
	}()
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
			t.Fatalf("the INCR was not held by CLIENT PAUSE within 10s:\n%s", info)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.get != "v" || r.err != nil {
		t.Errorf("GET in flight: got %q, %v; want \"v\" (sent again)", r.get, r.err)
	}
	if r.incr == nil || !strings.Contains(r.incr.Error(), "before the reply") {
		t.Errorf("INCR in flight: got %v, want an error saying the connection closed before the reply", r.incr)
	}
	if v, err := admin.Get(ctx, "counter").Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("counter: got %q, %v; want none (the INCR never ran and was not sent again)", v, err)
	}
}
