package redisproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/resp"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// TestSwapNutcrackerForAttache is the migration the issue promises: keys
// written through the real nutcracker are all read back through attache
// with the same server list, and keys written through attache are found by
// nutcracker. No re-sharding, whatever the distribution and whatever the
// order the servers are written in (nutcracker sorts them by name).
func TestSwapNutcrackerForAttache(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 keys through nutcracker")
	}
	bin := testenv.Binary(t, "nutcracker", "nutcracker")
	for _, tc := range []struct {
		name, dist string
		names      []string // server names, "" for none
		weights    []int
		n          int
	}{
		{"ketama", "ketama", []string{"shard0", "", ""}, []int{1, 1, 2}, 100000},
		{"modula/named/shuffled", "modula", []string{"shard10", "shard2", "s9"}, []int{1, 2, 1}, 20000},
		{"modula/mixed/shuffled", "modula", []string{"", "zz", ""}, []int{1, 1, 1}, 20000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			swap(t, bin, tc.dist, tc.names, tc.weights, tc.n)
		})
	}
}

// swap runs the migration of TestSwapNutcrackerForAttache over n keys.
func swap(t *testing.T, bin, dist string, names []string, weights []int, n int) {
	shards := make([]string, len(names))
	for i := range shards {
		shards[i] = testenv.Redis(t)
	}
	listen := testenv.FreePort(t)
	conf := fmt.Sprintf("pool:\n  listen: %s\n  hash: fnv1a_64\n  distribution: %s\n  hash_tag: \"{}\"\n  redis: true\n  servers:\n", listen, dist)
	var opts []upstream.Target
	for i, s := range shards {
		conf += fmt.Sprintf("   - %s:%d %s\n", s, weights[i], names[i])
		opts = append(opts, upstream.Target{Addr: s, Name: names[i], Weight: weights[i]})
	}
	file := filepath.Join(t.TempDir(), "nutcracker.yml")
	os.WriteFile(file, []byte(conf), 0o644)
	_, statsPort, _ := net.SplitHostPort(testenv.FreePort(t))
	logFile := filepath.Join(t.TempDir(), "nc.log")
	testenv.Start(t, exec.Command(bin, "-c", file, "-s", statsPort, "-o", logFile))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("nutcracker log:\n%s", b)
		}
	})
	testenv.WaitTCP(t, listen, 5*time.Second)

	p := pool(t, nil, func(o *Options) {
		o.Upstream = cluster(opts...)
		o.Distribution = dist
	})
	attache := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})
	at := client(attache)
	defer at.Close()
	ctx := context.Background()

	key := func(i int) string {
		switch i % 4 {
		case 0:
			return fmt.Sprint("user:{", i%977, "}:", i)
		case 1:
			return fmt.Sprint("ключ:", i)
		}
		return fmt.Sprint("key:", i)
	}
	// nutcracker closes the connection on HELLO, which go-redis sends, so
	// its side speaks raw RESP.
	ncConn, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer ncConn.Close()
	ncReader := resp.NewReader(ncConn)
	ncBatch := func(cmds [][][]byte) [][]byte {
		var out []byte
		for _, c := range cmds {
			out = resp.AppendCommand(out, c...)
		}
		ncConn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := ncConn.Write(out); err != nil {
			t.Fatal(err)
		}
		replies := make([][]byte, len(cmds))
		for i := range cmds {
			r, err := ncReader.ReadReply()
			if err != nil {
				t.Fatalf("nutcracker reply: %v", err)
			}
			replies[i] = append([]byte(nil), r...)
		}
		return replies
	}

	// written through nutcracker, read through attache
	for base := 0; base < n; base += 1000 {
		var cmds [][][]byte
		for i := base; i < base+1000; i++ {
			cmds = append(cmds, [][]byte{[]byte("SET"), []byte("nc:" + key(i)), []byte(fmt.Sprint(i))})
		}
		for _, r := range ncBatch(cmds) {
			if string(r) != "+OK\r\n" {
				t.Fatalf("SET through nutcracker: %q", r)
			}
		}
	}
	missing := 0
	for base := 0; base < n; base += 1000 {
		pipe := at.Pipeline()
		gets := make([]*redis.StringCmd, 0, 1000)
		for i := base; i < base+1000; i++ {
			gets = append(gets, pipe.Get(ctx, "nc:"+key(i)))
		}
		pipe.Exec(ctx)
		for j, g := range gets {
			if g.Val() != fmt.Sprint(base+j) {
				if missing++; missing < 4 {
					t.Errorf("%q written through nutcracker, not found through attache (%v)", "nc:"+key(base+j), g.Err())
				}
			}
		}
	}
	// written through attache, read through nutcracker
	for base := 0; base < n; base += 1000 {
		pipe := at.Pipeline()
		for i := base; i < base+1000; i++ {
			pipe.Set(ctx, "at:"+key(i), i, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("SET through attache: %v", err)
		}
		var cmds [][][]byte
		for i := base; i < base+1000; i++ {
			cmds = append(cmds, [][]byte{[]byte("GET"), []byte("at:" + key(i))})
		}
		for j, r := range ncBatch(cmds) {
			v := fmt.Sprint(base + j)
			if string(r) != fmt.Sprintf("$%d\r\n%s\r\n", len(v), v) {
				if missing++; missing < 4 {
					t.Errorf("%q written through attache, nutcracker got %q", "at:"+key(base+j), r)
				}
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d keys not found across the swap", missing, 2*n)
	}
}
