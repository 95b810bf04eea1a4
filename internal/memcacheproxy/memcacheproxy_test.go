package memcacheproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// proxy is a Handler over real memcached shards, served on loopback.
type proxy struct {
	addr   string
	shards []string
	stops  []func()
	up     *upstream.Cluster
	pool   *Pool
}

func startProxy(t *testing.T, n int, o Options, outlier upstream.OutlierPolicy) *proxy {
	t.Helper()
	px := &proxy{}
	var ts []upstream.Target
	for range n {
		a, stop := testenv.Memcached(t)
		px.shards, px.stops = append(px.shards, a), append(px.stops, stop)
		ts = append(ts, upstream.Target{Addr: a, Weight: 1})
	}
	picker, _ := balance.New("round_robin")
	px.up = upstream.New(upstream.Options{Name: "cache", Picker: picker, ConnectTimeout: time.Second, Outlier: outlier})
	px.up.SetEndpoints(ts)
	if o.Hash == "" {
		o.Hash, o.Distribution = "fnv1a_64", "ketama"
	}
	o.Timeout = 2 * time.Second
	pool, err := NewPool(px.up, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	px.pool = pool
	h := &Handler{Pool: pool, MaxValue: 1 << 20, IdleTimeout: time.Minute}
	px.addr = testenv.Serve(t, nil, func(c net.Conn) { h.ServeConn(context.Background(), c) })
	return px
}

// holder returns the shard that holds key, asked of each server directly.
func (px *proxy) holder(t *testing.T, key string) int {
	t.Helper()
	at := -1
	for i, s := range px.shards {
		_, err := memcache.New(s).Get(key)
		switch {
		case err == nil && at >= 0:
			t.Fatalf("%q on shards %d and %d", key, at, i)
		case err == nil:
			at = i
		case !errors.Is(err, memcache.ErrCacheMiss):
			t.Fatalf("get %q from shard %d: %v", key, i, err)
		}
	}
	return at
}

// TestClientThroughProxy drives the proxy with gomemcache, the Go
// client, through every command it sends, and checks that each key is
// stored on exactly one shard and that keys spread over all of them.
func TestClientThroughProxy(t *testing.T) {
	// md5: twemproxy's fnv1a_64 puts keys with one prefix close together.
	px := startProxy(t, 3, Options{Hash: "md5", Distribution: "ketama"}, upstream.OutlierPolicy{})
	mc := memcache.New(px.addr)
	mc.Timeout = 5 * time.Second
	var keys []string
	for i := range 60 {
		k := fmt.Sprintf("user:%d", i)
		keys = append(keys, k)
		if err := mc.Set(&memcache.Item{Key: k, Value: []byte("v" + k), Flags: uint32(i), Expiration: 300}); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	used := map[int]bool{}
	for _, k := range keys {
		used[px.holder(t, k)] = true
	}
	if len(used) != 3 {
		rg, _ := px.pool.current(time.Now())
		t.Fatalf("keys spread over %v of 3 shards; ring %d points over %v", used, rg.r.Points(), px.shards)
	}
	got, err := mc.GetMulti(append(keys, "missing"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(keys) {
		t.Fatalf("GetMulti: %d items, want %d", len(got), len(keys))
	}
	for i, k := range keys {
		if it := got[k]; it == nil || string(it.Value) != "v"+k || it.Flags != uint32(i) {
			t.Fatalf("GetMulti %s: %+v", k, it)
		}
	}

	if err := mc.Add(&memcache.Item{Key: keys[0], Value: []byte("x")}); !errors.Is(err, memcache.ErrNotStored) {
		t.Fatalf("add of an existing key: %v", err)
	}
	if err := mc.Replace(&memcache.Item{Key: "nokey", Value: []byte("x")}); !errors.Is(err, memcache.ErrNotStored) {
		t.Fatalf("replace of a missing key: %v", err)
	}
	if err := mc.Append(&memcache.Item{Key: keys[1], Value: []byte("+a")}); err != nil {
		t.Fatal(err)
	}
	if err := mc.Prepend(&memcache.Item{Key: keys[1], Value: []byte("p+")}); err != nil {
		t.Fatal(err)
	}
	it, err := mc.Get(keys[1])
	if err != nil || string(it.Value) != "p+v"+keys[1]+"+a" {
		t.Fatalf("after append and prepend: %v %+v", err, it)
	}
	it.Value = []byte("swapped")
	if err := mc.CompareAndSwap(it); err != nil {
		t.Fatal(err)
	}
	if err := mc.CompareAndSwap(it); !errors.Is(err, memcache.ErrCASConflict) {
		t.Fatalf("second cas with the old unique: %v", err)
	}
	mc.Set(&memcache.Item{Key: "n", Value: []byte("10")})
	if v, err := mc.Increment("n", 5); err != nil || v != 15 {
		t.Fatalf("incr: %d %v", v, err)
	}
	if v, err := mc.Decrement("n", 20); err != nil || v != 0 {
		t.Fatalf("decr below zero: %d %v", v, err)
	}
	if _, err := mc.Increment("nokey", 1); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("incr of a missing key: %v", err)
	}
	if err := mc.Touch(keys[2], 60); err != nil {
		t.Fatal(err)
	}
	if err := mc.Delete(keys[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Get(keys[2]); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := mc.Delete(keys[2]); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestPlacementMatchesNutcracker stores keys through the real nutcracker
// (Debian's package) in front of the same memcached servers and reads
// each one back through attache: ketama with twemproxy's defaults and with
// named, weighted servers places every key where nutcracker did.
func TestPlacementMatchesNutcracker(t *testing.T) {
	bin := testenv.Binary(t, "nutcracker", "nutcracker")
	for _, tc := range []struct {
		name    string
		names   []string
		weights []int
	}{
		{name: "unnamed"},
		{name: "named-weighted", names: []string{"mc-b", "mc-a", "mc-c"}, weights: []int{2, 1, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			px := startProxy(t, 3, Options{}, upstream.OutlierPolicy{})
			var ts []upstream.Target
			var conf strings.Builder
			listen := testenv.FreePort(t)
			fmt.Fprintf(&conf, "pool:\n  listen: %s\n  hash: fnv1a_64\n  distribution: ketama\n  servers:\n", listen)
			for i, s := range px.shards {
				w, name := 1, ""
				if tc.weights != nil {
					w, name = tc.weights[i], tc.names[i]
				}
				ts = append(ts, upstream.Target{Addr: s, Weight: w, Name: name})
				fmt.Fprintf(&conf, "   - %s:%d %s\n", s, w, name)
			}
			px.up.SetEndpoints(ts)
			pool, err := NewPool(px.up, Options{Hash: "fnv1a_64", Distribution: "ketama", Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			file := filepath.Join(t.TempDir(), "nutcracker.yml")
			os.WriteFile(file, []byte(conf.String()), 0o644)
			_, statsPort, _ := net.SplitHostPort(testenv.FreePort(t))
			testenv.Start(t, exec.Command(bin, "-c", file, "-s", statsPort, "-o", filepath.Join(t.TempDir(), "nc.log")))
			testenv.WaitTCP(t, listen, 5*time.Second)

			nc := memcache.New(listen)
			nc.Timeout = 5 * time.Second
			rg, err := pool.current(time.Now())
			if err != nil {
				t.Fatal(err)
			}
			for i := range 200 {
				k := fmt.Sprintf("key:%d:ключ", i)
				if err := nc.Set(&memcache.Item{Key: k, Value: []byte("v")}); err != nil {
					t.Fatalf("set %q through nutcracker: %v", k, err)
				}
				want := rg.pick([]byte(k), pool).Addr
				if got := px.shards[px.holder(t, k)]; got != want {
					t.Fatalf("%q: nutcracker stored it on %s, attache reads it from %s", k, got, want)
				}
			}
		})
	}
}

// conn is a raw text-protocol client.
type conn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &conn{t: t, c: c, r: bufio.NewReader(c)}
}

// send writes s and returns the next n reply lines.
func (c *conn) send(s string, n int) []string {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for range n {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("after %q: %v (read %q)", s, err, out)
		}
		out = append(out, strings.TrimRight(l, "\r\n"))
	}
	return out
}

// TestMalformedCommands: each bad command gets memcached's answer and the
// connection goes on with the next one, the shared server connections
// untouched.
func TestMalformedCommands(t *testing.T) {
	px := startProxy(t, 2, Options{}, upstream.OutlierPolicy{})
	c := dial(t, px.addr)
	long := strings.Repeat("k", MaxKey+1)
	for _, tc := range []struct{ send, want string }{
		{"bogus\r\n", "ERROR"},
		{"get\r\n", "ERROR"},
		{"get " + long + "\r\n", "CLIENT_ERROR bad command line format"},
		{"set k 0 0 notanumber\r\n", "CLIENT_ERROR bad data chunk"},
		{"set k x 0 1\r\nv\r\n", "CLIENT_ERROR bad command line format"},
		{"set k 0 0 2000000\r\n" + strings.Repeat("x", 2000000) + "\r\n", "SERVER_ERROR object too large for cache"},
		{"set k 0 0 1\r\nabc\r\n", "CLIENT_ERROR bad data chunk"},
		{"incr k -1\r\n", "CLIENT_ERROR invalid numeric delta argument"},
		{"delete k 10\r\n", "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"},
		{"stats\r\n", "SERVER_ERROR command not supported by the proxy"},
		{"version\r\n", "VERSION attache"},
	} {
		got := c.send(tc.send, 1)[0]
		if tc.send == "set k 0 0 1\r\nabc\r\n" || tc.send == "set k x 0 1\r\nv\r\n" {
			// What followed the bad block is read as a command, as
			// memcached reads it.
			c.send("", 1)
		}
		if got != tc.want {
			t.Errorf("%.40q: got %q, want %q", tc.send, got, tc.want)
		}
	}
	// noreply: nothing comes back, and the next reply is the get's.
	if got := c.send("set a 0 0 1 noreply\r\n1\r\nset b 0 0 1 noreply\r\n2\r\nget a b\r\n", 5); got[4] != "END" || got[1] != "1" || got[3] != "2" {
		t.Fatalf("after noreply sets: %q", got)
	}
	// A line with no end, too long to hold, ends the connection.
	c.c.Write([]byte(strings.Repeat("g", MaxLine+8<<10)))
	if got, _ := c.r.ReadString('\n'); got != "CLIENT_ERROR line too long\r\n" {
		t.Fatalf("line too long: %.60q", got)
	}
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after a line too long")
	}
	// Other clients are unaffected.
	if got := dial(t, px.addr).send("get a\r\n", 3); got[2] != "END" {
		t.Fatalf("another client: %q", got)
	}
}

// TestDeadShard: without auto_eject the keys of a stopped shard get
// SERVER_ERROR and the others are served; with it (one failure ejects,
// as server_failure_limit 1), they move to the live shards, and a
// multi-get spanning shards answers in full.
func TestDeadShard(t *testing.T) {
	for _, eject := range []bool{false, true} {
		t.Run(fmt.Sprintf("auto_eject=%v", eject), func(t *testing.T) {
			px := startProxy(t, 3, Options{Hash: "md5", Distribution: "ketama", AutoEject: eject,
				Eject: upstream.FailurePolicy{Limit: 1, RetryTimeout: time.Minute}}, upstream.OutlierPolicy{})
			mc := memcache.New(px.addr)
			mc.Timeout = 5 * time.Second
			var keys []string
			for i := range 30 {
				keys = append(keys, fmt.Sprintf("k%d", i))
				if err := mc.Set(&memcache.Item{Key: keys[i], Value: []byte("v")}); err != nil {
					t.Fatal(err)
				}
			}
			var onDead, onLive []string
			for _, k := range keys {
				if px.holder(t, k) == 0 {
					onDead = append(onDead, k)
				} else {
					onLive = append(onLive, k)
				}
			}
			px.stops[0]()
			c := dial(t, px.addr)
			first := c.send("get "+onDead[0]+"\r\n", 1)[0]
			if !strings.HasPrefix(first, "SERVER_ERROR") {
				t.Fatalf("get of a dead shard's key: %q", first)
			}
			for _, k := range onLive {
				if _, err := mc.Get(k); err != nil {
					t.Fatalf("live key %s: %v", k, err)
				}
			}
			if !eject {
				if err := mc.Set(&memcache.Item{Key: onDead[1], Value: []byte("again")}); err == nil {
					t.Fatal("set of a dead shard's key succeeded without auto_eject")
				}
				return
			}
			// The failures that reach the limit are answered with
			// SERVER_ERROR; the commands after them go to the live shards.
			var err error
			for range 3 {
				if err = mc.Set(&memcache.Item{Key: onDead[1], Value: []byte("again")}); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("set after ejection: %v", err)
			}
			if got, err := mc.GetMulti(append(onLive, onDead[1])); err != nil || len(got) != len(onLive)+1 {
				t.Fatalf("multi-get after ejection: %d items, %v", len(got), err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"get a b c", "gat 10 a b", "set k 0 0 5", "cas k 1 2 3 4 noreply", "incr k 1", "delete k 0 noreply", "touch k 10", "bogus", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		rq, err := parse(line, 1<<20)
		if err != nil {
			return
		}
		if rq.kind != retrieval && rq.kind != storage && rq.kind != single {
			return
		}
		for _, k := range rq.keys {
			if len(k) == 0 || len(k) > MaxKey || !validKey(k) {
				t.Fatalf("key %q accepted", k)
			}
		}
		out := rq.line(rq.keys)
		again, err := parse(out[:len(out)-2], 1<<20)
		if err != nil || string(again.line(again.keys)) != string(out) {
			t.Fatalf("%q: re-parse of %q: %v", line, out, err)
		}
	})
}

// TestShardRestart: a read on an idle connection that a restarted shard
// had closed is sent once more on a new connection; the application sees
// no error.
func TestShardRestart(t *testing.T) {
	px := startProxy(t, 1, Options{}, upstream.OutlierPolicy{})
	mc := memcache.New(px.addr)
	mc.Timeout = 5 * time.Second
	if err := mc.Set(&memcache.Item{Key: "k", Value: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	px.stops[0]()
	_, port, _ := net.SplitHostPort(px.shards[0])
	testenv.Start(t, exec.Command(testenv.Binary(t, "memcached", "memcached"), "-l", "127.0.0.1", "-p", port, "-U", "0", "-m", "16", "-u", "nobody"))
	testenv.WaitTCP(t, px.shards[0], 10*time.Second)
	if err := memcache.New(px.shards[0]).Set(&memcache.Item{Key: "k", Value: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	it, err := mc.Get("k")
	if err != nil || string(it.Value) != "new" {
		t.Fatalf("get after the shard restarted: %v", err)
	}
}

// FuzzReadValues: whatever a server sends, a retrieval reply is read
// within its bounds or refused.
func FuzzReadValues(f *testing.F) {
	for _, s := range []string{"END\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n", "VALUE k 0 1 9\r\nv\r\nEND\r\n", "SERVER_ERROR x\r\n", "VALUE k 0 99999999\r\n", "VALUE k 0 1\r\nvv\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		values, err := readValues(bufio.NewReader(strings.NewReader(string(b))), 64)
		if err != nil {
			return
		}
		for k, vs := range values {
			for _, v := range vs {
				if !strings.HasPrefix(string(v), "VALUE "+k+" ") || !strings.HasSuffix(string(v), "\r\n") || len(v) > MaxLine+64+4 {
					t.Fatalf("block %q for %q", v, k)
				}
			}
		}
	})
}
