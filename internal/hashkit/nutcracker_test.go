package hashkit

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// pipeline sends commands on one connection and returns the first line of
// each reply (enough for +OK, :1 and -ERR).
func pipeline(t *testing.T, addr string, cmds [][]string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	w := bufio.NewWriter(c)
	for _, cmd := range cmds {
		fmt.Fprintf(w, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(w, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	out := make([]string, len(cmds))
	for i := range cmds {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d of %d from %s: %v", i, len(cmds), addr, err)
		}
		out[i] = strings.TrimRight(line, "\r\n")
	}
	return out
}

// testKeys mixes ASCII, prefixes that cluster under fnv, UTF-8, bytes
// >= 0x80 and hash tags.
func testKeys() []string {
	var keys []string
	for i := 0; i < 120; i++ {
		keys = append(keys, fmt.Sprintf("key:%d", i), fmt.Sprintf("ключ:%d", i))
	}
	for i := 0; i < 40; i++ {
		keys = append(keys, fmt.Sprintf("user:{%d}:name", i), fmt.Sprintf("bin\xff\x80%c%d", rune(0x80+i), i), fmt.Sprintf("k%d", i))
	}
	return keys
}

// TestAgainstNutcracker writes keys through the real nutcracker (Debian's
// package) for each hash and distribution, finds on which shard each key
// landed, and compares with hashkit's placement: the golden vectors come
// from the peer itself.
func TestAgainstNutcracker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nutcracker and up to 25 redis-servers")
	}
	bin := testenv.Binary(t, "nutcracker", "nutcracker")
	keys := testKeys()

	type pool struct {
		name, hash, dist, tag string
		names                 []string // optional server names
		weights               []int
		// descending: the servers are written in descending order of
		// their names, never in the order nutcracker sorts them into.
		descending bool
	}
	var pools []pool
	for _, h := range Names {
		pools = append(pools, pool{name: h + "/ketama", hash: h, dist: "ketama", weights: []int{1, 1, 1}})
	}
	pools = append(pools,
		pool{name: "fnv1a_64/ketama/weights", hash: "fnv1a_64", dist: "ketama", weights: []int{1, 2, 3}},
		pool{name: "fnv1a_64/ketama/named", hash: "fnv1a_64", dist: "ketama", names: []string{"shard0", "shard1", "shard2"}, weights: []int{3, 1, 2}},
		pool{name: "fnv1a_64/ketama/tag", hash: "fnv1a_64", dist: "ketama", tag: "{}", weights: []int{1, 1, 1}},
	)
	// 25 servers: float32 point counts (156 per equal server, not 160) and
	// a ring dense enough that an off-by-one in the continuum shows.
	equal25, mixed25 := make([]int, 25), make([]int, 25)
	for i := range equal25 {
		equal25[i], mixed25[i] = 1, 1+i%4
	}
	pools = append(pools,
		pool{name: "fnv1a_64/ketama/25", hash: "fnv1a_64", dist: "ketama", weights: equal25},
		pool{name: "md5/ketama/25/weights", hash: "md5", dist: "ketama", weights: mixed25},
	)
	// Server order: nutcracker sorts the servers by name (shorter first,
	// then bytewise) when it loads its configuration, and modula indexes
	// that sorted list; the names below are written out of that order.
	pools = append(pools,
		pool{name: "fnv1a_64/modula/unnamed/descending", hash: "fnv1a_64", dist: "modula", weights: []int{1, 1, 1}, descending: true},
		pool{name: "fnv1a_64/modula/unnamed/weights/descending", hash: "fnv1a_64", dist: "modula", weights: []int{3, 1, 2}, descending: true},
		pool{name: "md5/modula/unnamed/random-ports", hash: "md5", dist: "modula", weights: equal25},
		pool{name: "fnv1a_64/modula/named", hash: "fnv1a_64", dist: "modula", names: []string{"shard10", "shard2", "s9", "shard1"}, weights: []int{1, 1, 1, 1}},
		pool{name: "crc32a/modula/named/weights", hash: "crc32a", dist: "modula", names: []string{"b", "aa", "a", "B"}, weights: []int{2, 1, 3, 1}},
		pool{name: "murmur/ketama/named/shuffled", hash: "murmur", dist: "ketama", names: []string{"shard10", "shard2", "s9", "shard1"}, weights: []int{1, 2, 1, 3}},
		pool{name: "fnv1a_64/ketama/unnamed/weights/descending", hash: "fnv1a_64", dist: "ketama", weights: []int{3, 1, 2}, descending: true},
	)
	for _, p := range pools {
		t.Run(p.name, func(t *testing.T) {
			shards := make([]string, len(p.weights))
			for i := range shards {
				shards[i] = testenv.Redis(t)
			}
			if p.descending {
				slices.SortFunc(shards, func(a, b string) int { return -nameCompare(a, b) })
			}
			listen := testenv.FreePort(t)
			var conf strings.Builder
			fmt.Fprintf(&conf, "pool:\n  listen: %s\n  hash: %s\n  distribution: %s\n  redis: true\n", listen, p.hash, p.dist)
			if p.tag != "" {
				fmt.Fprintf(&conf, "  hash_tag: %q\n", p.tag)
			}
			conf.WriteString("  servers:\n")
			var srv []Server
			for i, s := range shards {
				name := ""
				if p.names != nil {
					name = p.names[i]
				}
				fmt.Fprintf(&conf, "   - %s:%d %s\n", s, p.weights[i], name)
				srv = append(srv, Server{Name: KetamaName(s, name), Weight: p.weights[i], Live: true})
			}
			file := filepath.Join(t.TempDir(), "nutcracker.yml")
			os.WriteFile(file, []byte(conf.String()), 0o644)
			_, statsPort, _ := net.SplitHostPort(testenv.FreePort(t))
			testenv.Start(t, exec.Command(bin, "-c", file, "-s", statsPort, "-o", filepath.Join(t.TempDir(), "nc.log")))
			testenv.WaitTCP(t, listen, 5*time.Second)

			var sets [][]string
			for _, k := range keys {
				sets = append(sets, []string{"SET", k, "v"})
			}
			for i, r := range pipeline(t, listen, sets) {
				if r != "+OK" {
					t.Fatalf("SET %q through nutcracker: %s", keys[i], r)
				}
			}
			var exists [][]string
			for _, k := range keys {
				exists = append(exists, []string{"EXISTS", k})
			}
			placed := make([]int, len(keys))
			for i := range placed {
				placed[i] = -1
			}
			for si, s := range shards {
				for i, r := range pipeline(t, s, exists) {
					if r == ":1" {
						placed[i] = si
					}
				}
			}
			hash, _ := ByName(p.hash)
			ring, err := Build(p.dist, srv)
			if err != nil {
				t.Fatal(err)
			}
			mismatches := 0
			for i, k := range keys {
				if got := ring.Pick([]byte(k), hash, p.tag); got != placed[i] {
					if mismatches < 5 {
						t.Errorf("%q: hashkit says shard %d, nutcracker put it on %d", k, got, placed[i])
					}
					mismatches++
				}
			}
			if mismatches > 0 {
				t.Errorf("%d of %d keys placed differently from nutcracker", mismatches, len(keys))
			}
		})
	}
}

// nameCompare is nutcracker's string_compare: the shorter string first,
// then bytewise.
func nameCompare(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}
