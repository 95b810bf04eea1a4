package hashkit

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"testing"
)

// Values for "foo" as nutcracker computes them (../shared/reference/
// protocols.md 1.4, verified against nutcracker key by key).
func TestHashesOfFoo(t *testing.T) {
	want := map[string]uint32{
		"fnv1a_64": 0xfed9d577, "fnv1_64": 0x6ba13533, "fnv1a_32": 0xa9f37ed7, "fnv1_32": 0x408f5e13,
		"md5": 0xdb18bdac, "crc32": 0x0c73, "crc32a": 0x8c736521, "crc16": 0x0c3caf96,
		"one_at_a_time": 0x238678dd, "murmur": 0xc4e0338f, "hsieh": 0x76d4d427, "jenkins": 0x99f84f99,
	}
	for _, name := range Names {
		f, err := ByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := f([]byte("foo")); got != want[name] {
			t.Errorf("%s(foo) = %#x, want %#x", name, got, want[name])
		}
	}
	if _, err := ByName("fnv1a64"); err == nil {
		t.Error("unknown hash accepted")
	}
}

func TestFNV1a64Quirks(t *testing.T) {
	for key, want := range map[string]uint32{"bar": 0x1339461a, "baz": 0x13393882, "key:1": 0x962f5ac9, "k7": 0xb5622827, "ключ:0": 0xf04c7883, "ключ:1": 0xf04c76d0, "42": 0xb4b19223} {
		if got := FNV1a_64([]byte(key)); got != want {
			t.Errorf("fnv1a_64(%q) = %#x, want %#x", key, got, want)
		}
	}
}

func servers(names []string, weights []int) []Server {
	s := make([]Server, len(names))
	for i := range names {
		s[i] = Server{Name: names[i], Weight: weights[i], Live: true}
	}
	return s
}

var three = []string{"127.0.0.1:6390", "127.0.0.1:6391", "127.0.0.1:6392"}

// TestGoldenPlacement: protocols.md 1.5, verified against nutcracker.
func TestGoldenPlacement(t *testing.T) {
	keys := []string{"foo", "bar", "baz", "key:1", "k7", "ключ:0"}
	for _, tc := range []struct {
		name    string
		dist    string
		hash    Func
		names   []string
		weights []int
		want    []int
	}{
		{"ketama fnv1a_64", "ketama", FNV1a_64, three, []int{1, 1, 1}, []int{0, 1, 1, 0, 2, 0}},
		{"ketama named 1/2/3", "ketama", FNV1a_64, []string{"alpha", "beta", "gamma"}, []int{1, 2, 3}, []int{2, 2, 2, 2, 2, 1}},
		{"modula 1/2/1", "modula", FNV1a_64, three, []int{1, 2, 1}, []int{2, 1, 1, 1, 2, 2}},
		{"ketama murmur", "ketama", Murmur, three, []int{1, 1, 1}, []int{0, 2, 0, 0, 2, 0}},
		{"ketama md5", "ketama", MD5, three, []int{1, 1, 1}, []int{0, 2, 0, 1, 0, 1}},
	} {
		r, err := Build(tc.dist, servers(tc.names, tc.weights))
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			if got := r.Pick([]byte(k), tc.hash, ""); got != tc.want[i] {
				t.Errorf("%s: %q on server %d, want %d", tc.name, k, got, tc.want[i])
			}
		}
	}
}

func TestKetamaRing(t *testing.T) {
	r, _ := Build("ketama", servers(three, []int{1, 1, 1}))
	if r.Points() != 480 {
		t.Errorf("points: got %d, want 480", r.Points())
	}
	if r.points[0].value != 0x0009d4f5 || r.points[0].index != 0 {
		t.Errorf("first point: got %#x -> %d, want 0x9d4f5 -> 0", r.points[0].value, r.points[0].index)
	}
	sum := md5.Sum([]byte("127.0.0.1:6390-0"))
	if hex.EncodeToString(sum[:]) != "256c6232347358e99f2a3977991231cb" {
		t.Errorf("md5 of the first ring string: %x", sum)
	}
	// float32: 25 equal servers get 39 digests (156 points) each
	var names []string
	var w []int
	for i := 0; i < 25; i++ {
		names, w = append(names, fmt.Sprintf("10.0.0.%d:6379", i)), append(w, 1)
	}
	r25, _ := Build("ketama", servers(names, w))
	if got := r25.Points(); got != 25*156 {
		t.Errorf("25 servers: %d points, want %d (float32 rounding)", got, 25*156)
	}
	// weights 1,2,3 give 80, 160 and 240 points
	rw, _ := Build("ketama", servers(three, []int{1, 2, 3}))
	per := map[int]int{}
	for _, p := range rw.points {
		per[p.index]++
	}
	if per[0] != 80 || per[1] != 160 || per[2] != 240 {
		t.Errorf("weighted points: got %v, want 80/160/240", per)
	}
}

func TestEjectionMovesOnlyTheDeadServersKeys(t *testing.T) {
	all := servers(three, []int{1, 1, 1})
	before, _ := Build("ketama", all)
	all[1].Live = false
	after, _ := Build("ketama", all)
	for i := 0; i < 2000; i++ {
		k := []byte(fmt.Sprintf("key:%d", i))
		b, a := before.Pick(k, FNV1a_64, ""), after.Pick(k, FNV1a_64, "")
		if a == 1 {
			t.Fatalf("%s placed on the ejected server", k)
		}
		if b != 1 && a != b {
			t.Fatalf("%s moved from live server %d to %d", k, b, a)
		}
	}
}

func TestTagsAndSpecialCases(t *testing.T) {
	for key, want := range map[string]string{"user:{42}:name": "42", "{}x": "{}x", "x{}y{z}": "x{}y{z}", "a{b": "a{b", "{a}{b}": "a", "plain": "plain"} {
		if got := string(TagKey([]byte(key), "{}")); got != want {
			t.Errorf("TagKey(%q) = %q, want %q", key, got, want)
		}
	}
	r, _ := Build("ketama", servers(three, []int{1, 1, 1}))
	if got := r.Pick([]byte("user:{42}:name"), FNV1a_64, "{}"); got != 0 {
		t.Errorf("tagged key: server %d, want 0", got)
	}
	if got, want := r.Pick(nil, FNV1a_64, ""), r.Index(0); got != want {
		t.Errorf("empty key: server %d, want the owner of hash 0 (%d)", got, want)
	}
	one, _ := Build("ketama", servers(three[:1], []int{1}))
	one.points = nil // a single configured server is used without hashing
	if got := one.Pick([]byte("anything"), FNV1a_64, ""); got != 0 {
		t.Errorf("single server: got %d", got)
	}
	dead := servers(three, []int{1, 1, 1})
	for i := range dead {
		dead[i].Live = false
	}
	none, _ := Build("ketama", dead)
	if got := none.Pick([]byte("k"), FNV1a_64, ""); got != -1 {
		t.Errorf("all ejected: got %d, want -1", got)
	}
	for in, want := range map[string]string{"cache-1:11211": "cache-1", "cache-1:6379": "cache-1:6379"} {
		if got := KetamaName(in, ""); got != want {
			t.Errorf("KetamaName(%q) = %q, want %q", in, got, want)
		}
	}
	if KetamaName("10.0.0.1:6379", "shard0") != "shard0" {
		t.Error("a named server must hash its name")
	}
}

func FuzzHashes(f *testing.F) {
	for _, s := range []string{"", "foo", "ключ", "\xff\x80\x00", "a-much-longer-key-than-twelve-bytes"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, key []byte) {
		for _, name := range Names {
			fn, _ := ByName(name)
			fn(key)
		}
		if FNV1a_64(key) != FNV1a_64(append([]byte(nil), key...)) {
			t.Fatal("not deterministic")
		}
	})
}
