package ratelimit

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

const sec = int64(time.Second)

func TestBucketBurstThenRate(t *testing.T) {
	t.Parallel()
	l := NewLimiter(PolicyOf(10, time.Second, 3), 1) // 10/s, 3 at once
	now := int64(1000 * sec)
	for i, want := range []int{2, 1, 0} {
		d := l.Take(now)
		if !d.OK || d.Remaining != want {
			t.Fatalf("request %d: got ok=%v remaining=%d, want ok, remaining %d", i, d.OK, d.Remaining, want)
		}
	}
	d := l.Take(now)
	if d.OK || d.RetryAfter != 100*time.Millisecond || d.Reset != 300*time.Millisecond {
		t.Fatalf("over the burst: got %+v, want refused, retry after 100ms, reset 300ms", d)
	}
	// 50 ms: half a token.
	if d := l.Take(now + sec/20); d.OK || d.RetryAfter != 50*time.Millisecond {
		t.Fatalf("after 50ms: got %+v, want refused, retry after 50ms", d)
	}
	// 100 ms: one token, taken.
	if d := l.Take(now + sec/10); !d.OK || d.Remaining != 0 {
		t.Fatalf("after 100ms: got %+v, want allowed, 0 remaining", d)
	}
	// A long pause refills to the burst, not beyond.
	if d := l.Take(now + 3600*sec); !d.OK || d.Remaining != 2 || d.Reset != 100*time.Millisecond {
		t.Fatalf("after an hour: got %+v, want allowed, 2 remaining, reset 100ms", d)
	}
}

func TestBucketClockBackwards(t *testing.T) {
	t.Parallel()
	l := NewLimiter(PolicyOf(1, time.Second, 1), 1)
	if d := l.Take(10 * sec); !d.OK {
		t.Fatalf("first: got %+v, want allowed", d)
	}
	if d := l.Take(5 * sec); d.OK {
		t.Fatalf("clock back 5s: got %+v, want refused (no tokens made up)", d)
	}
	if d := l.Take(11 * sec); !d.OK {
		t.Fatalf("1s after the first: got %+v, want allowed", d)
	}
}

func TestRateOverLongRun(t *testing.T) {
	t.Parallel()
	// 100 per minute, burst 5: in 10 minutes of a request every 10 ms,
	// 5 + 1000 are allowed.
	l := NewLimiter(PolicyOf(100, time.Minute, 5), 1)
	allowed := 0
	for now := int64(0); now <= 600*sec; now += sec / 100 {
		if l.Take(now).OK {
			allowed++
		}
	}
	if allowed != 1005 {
		t.Fatalf("got %d allowed, want 1005", allowed)
	}
}

func TestSeconds(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{{0, 0}, {1, 1}, {time.Second, 1}, {time.Second + 1, 2}, {1500 * time.Millisecond, 2}} {
		if got := Seconds(c.d); got != c.want {
			t.Errorf("Seconds(%v): got %d, want %d", c.d, got, c.want)
		}
	}
}

func TestKeysAreIsolated(t *testing.T) {
	t.Parallel()
	l := NewLimiter(PolicyOf(1, time.Hour, 2), 10)
	a, b := l.Key("alice"), l.Key("bob")
	for range 2 {
		if !l.TakeKey(a, sec).OK {
			t.Fatal("alice within her burst: refused")
		}
	}
	if l.TakeKey(a, sec).OK {
		t.Fatal("alice over her burst: allowed")
	}
	if d := l.TakeKey(b, sec); !d.OK || d.Remaining != 1 {
		t.Fatalf("bob: got %+v, want allowed with 1 remaining (his own bucket)", d)
	}
	if !l.Take(sec).OK {
		t.Fatal("no key: refused (its own shared bucket is full)")
	}
	if l.KeyBytes([]byte("alice")) != a {
		t.Fatal("KeyBytes and Key differ")
	}
}

func TestKeysBoundedLRU(t *testing.T) {
	t.Parallel()
	l := NewLimiter(PolicyOf(1, time.Hour, 1), 3)
	k := func(s string) uint64 { return l.Key(s) }
	now := sec
	for _, s := range []string{"a", "b", "c"} {
		l.TakeKey(k(s), now)
	}
	// a used again: b is now the least recent.
	if l.TakeKey(k("a"), now).OK {
		t.Fatal("a again: allowed, want refused (its bucket is empty)")
	}
	for i := range 1000 { // random keys: the set stays at 3
		l.TakeKey(k(string(rune('A'+i%26))+string(rune(i))), now)
		if n := l.Keys(); n > 3 {
			t.Fatalf("keys: got %d, want at most 3", n)
		}
	}
	if got := l.Evictions(); got != 1000 {
		t.Fatalf("evictions: got %d, want 1000", got)
	}
	// Every key was pushed out: a comes back with a full bucket.
	if !l.TakeKey(k("a"), now).OK {
		t.Fatal("a after eviction: refused, want a new full bucket")
	}
}

func TestKeysLRUKeepsRecent(t *testing.T) {
	t.Parallel()
	l := NewLimiter(PolicyOf(1, time.Hour, 1), 2)
	a, b, c := l.Key("a"), l.Key("b"), l.Key("c")
	l.TakeKey(a, sec)
	l.TakeKey(b, sec)
	l.TakeKey(a, sec) // a is the most recent
	l.TakeKey(c, sec) // evicts b
	if l.TakeKey(a, sec).OK {
		t.Fatal("a: allowed, want refused (kept, empty)")
	}
	if !l.TakeKey(b, sec).OK {
		t.Fatal("b: refused, want allowed (evicted, new bucket)")
	}
}

func TestQueueReserve(t *testing.T) {
	t.Parallel()
	q := NewQueue(PolicyOf(10, time.Second, 1), 2, 250*time.Millisecond)
	now := 100 * sec
	if r, ok, _ := q.Reserve(now, 0); !ok || r.Delay != 0 {
		t.Fatalf("first: got delay %v ok %v, want a token at once", r.Delay, ok)
	}
	r1, ok, _ := q.Reserve(now, 0)
	if !ok || r1.Delay != 100*time.Millisecond {
		t.Fatalf("second: got delay %v ok %v, want a 100ms wait", r1.Delay, ok)
	}
	r2, ok, _ := q.Reserve(now, 0)
	if !ok || r2.Delay != 200*time.Millisecond {
		t.Fatalf("third: got delay %v ok %v, want a 200ms wait", r2.Delay, ok)
	}
	if q.Waiting() != 2 {
		t.Fatalf("waiting: got %d, want 2", q.Waiting())
	}
	// The queue is full (2): refused at once, with when a token would be free.
	if _, ok, after := q.Reserve(now, 0); ok || after != 300*time.Millisecond {
		t.Fatalf("queue full: got ok %v retry after %v, want refused, 300ms", ok, after)
	}
	// One gives up: its token goes back, and its place in the queue.
	r2.Cancel()
	if q.Waiting() != 1 {
		t.Fatalf("waiting after cancel: got %d, want 1", q.Waiting())
	}
	r3, ok, _ := q.Reserve(now, 0)
	if !ok || r3.Delay != 200*time.Millisecond {
		t.Fatalf("after a cancel: got delay %v ok %v, want the freed 200ms place", r3.Delay, ok)
	}
	r1.Cancel()
	r3.Cancel()
	if q.Waiting() != 0 {
		t.Fatalf("waiting: got %d, want 0", q.Waiting())
	}
}

func TestQueueTimeout(t *testing.T) {
	t.Parallel()
	q := NewQueue(PolicyOf(1, time.Second, 1), 100, 1500*time.Millisecond)
	now := 100 * sec
	q.Reserve(now, 0)
	r, ok, _ := q.Reserve(now, 0)
	if !ok || r.Delay != time.Second {
		t.Fatalf("second: got delay %v ok %v, want a 1s wait", r.Delay, ok)
	}
	// A 2s wait is over max_wait (1.5s): refused.
	if _, ok, after := q.Reserve(now, 0); ok || after != 2*time.Second {
		t.Fatalf("2s wait: got ok %v retry after %v, want refused, 2s", ok, after)
	}
	// A limit tighter than max_wait (the route's time left) is honoured.
	q2 := NewQueue(PolicyOf(1, time.Second, 1), 100, time.Minute)
	q2.Reserve(now, 0)
	if _, ok, _ := q2.Reserve(now, 500*time.Millisecond); ok {
		t.Fatal("1s wait with 500ms left: reserved, want refused")
	}
	r.Cancel()
}

func TestQueueNoQueue(t *testing.T) {
	t.Parallel()
	q := NewQueue(PolicyOf(1, time.Second, 1), 0, time.Second)
	q.Reserve(sec, 0)
	if _, ok, after := q.Reserve(sec, 0); ok || after != time.Second {
		t.Fatalf("no queue: got ok %v retry after %v, want refused, 1s", ok, after)
	}
}

func TestReservationWait(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		q := NewQueue(PolicyOf(1, time.Second, 1), 10, 5*time.Second)
		now := time.Now().UnixNano()
		q.Reserve(now, 0)
		r, _, _ := q.Reserve(now, 0)
		start := time.Now()
		if !r.Wait(context.Background()) {
			t.Fatal("Wait: false, want true")
		}
		if got := time.Since(start); got != time.Second {
			t.Fatalf("waited %v, want 1s", got)
		}
		if q.Waiting() != 0 {
			t.Fatalf("waiting: got %d, want 0", q.Waiting())
		}
		// A client that goes away leaves the queue and gives its token back.
		r2, _, _ := q.Reserve(time.Now().UnixNano(), 0)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(100 * time.Millisecond); cancel() }()
		if r2.Wait(ctx) {
			t.Fatal("Wait with a cancelled context: true, want false")
		}
		if q.Waiting() != 0 {
			t.Fatalf("waiting after cancel: got %d, want 0", q.Waiting())
		}
	})
}
