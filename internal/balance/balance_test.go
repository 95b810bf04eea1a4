package balance

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/attache-proxy/attache/internal/config"
)

func cands(weights ...int) []Candidate {
	cs := make([]Candidate, len(weights))
	for i, w := range weights {
		cs[i] = Candidate{ID: fmt.Sprintf("10.0.0.%d:80", i+1), Weight: w, Usable: true}
	}
	return cs
}

func counts(t *testing.T, p Picker, cs []Candidate, n int) []int {
	t.Helper()
	got := make([]int, len(cs))
	for i := 0; i < n; i++ {
		j := p.Pick(cs, HashString(fmt.Sprint(i)))
		if j < 0 {
			t.Fatalf("pick %d: got -1 with usable candidates", i)
		}
		if !cs[j].Usable {
			t.Fatalf("pick %d: got unusable candidate %d", i, j)
		}
		got[j]++
	}
	return got
}

func TestEveryConfigPolicyExists(t *testing.T) {
	for _, name := range config.BalancePolicies {
		if _, err := New(name); err != nil {
			t.Errorf("New(%q): %v", name, err)
		}
	}
	if _, err := New("nope"); err == nil {
		t.Error("New(nope): got nil error")
	}
}

func TestNoneUsable(t *testing.T) {
	for _, name := range config.BalancePolicies {
		p, _ := New(name)
		cs := cands(1, 1)
		cs[0].Usable, cs[1].Usable = false, false
		if got := p.Pick(cs, 1); got != -1 {
			t.Errorf("%s: got %d, want -1", name, got)
		}
		if got := p.Pick(nil, 1); got != -1 {
			t.Errorf("%s with no candidates: got %d, want -1", name, got)
		}
	}
}

func TestSkipsUnusable(t *testing.T) {
	for _, name := range config.BalancePolicies {
		p, _ := New(name)
		cs := cands(1, 1, 1)
		cs[1].Usable = false
		got := counts(t, p, cs, 300)
		if got[1] != 0 {
			t.Errorf("%s: unusable endpoint picked %d times", name, got[1])
		}
	}
}

func TestRoundRobinEven(t *testing.T) {
	p, _ := New("round_robin")
	if got := counts(t, p, cands(1, 5, 1), 300); !slices.Equal(got, []int{100, 100, 100}) {
		t.Errorf("got %v, want even split ignoring weight", got)
	}
}

func TestWeightedExactAndSmooth(t *testing.T) {
	p, _ := New("weighted")
	cs := cands(5, 1, 1)
	var seq []int
	for i := 0; i < 7; i++ {
		seq = append(seq, p.Pick(cs, 0))
	}
	// nginx's smooth WRR for {5,1,1}: a a b a c a a
	if want := []int{0, 0, 1, 0, 2, 0, 0}; !slices.Equal(seq, want) {
		t.Errorf("got sequence %v, want %v", seq, want)
	}
	if got := counts(t, p, cs, 700); !slices.Equal(got, []int{500, 100, 100}) {
		t.Errorf("got %v, want 500/100/100", got)
	}
}

func TestRandomProportional(t *testing.T) {
	p, _ := New("random")
	got := counts(t, p, cands(3, 1), 40000)
	if r := float64(got[0]) / 40000; math.Abs(r-0.75) > 0.02 {
		t.Errorf("got share %.3f for weight 3 of 4, want 0.75±0.02", r)
	}
}

func TestLeastConnections(t *testing.T) {
	p, _ := New("least_connections")
	cs := cands(1, 1, 2)
	cs[0].Active, cs[1].Active, cs[2].Active = 3, 1, 3
	// loads per weight: 3, 1, 1.5
	if got := p.Pick(cs, 0); got != 1 {
		t.Errorf("got %d, want 1 (least loaded)", got)
	}
	// equal loads rotate
	cs = cands(1, 1, 1)
	if got := counts(t, p, cs, 300); !slices.Equal(got, []int{100, 100, 100}) {
		t.Errorf("ties: got %v, want even rotation", got)
	}
}

func TestP2CAvoidsLoaded(t *testing.T) {
	p, _ := New("p2c")
	cs := cands(1, 1, 1)
	cs[0].Active = 100
	got := counts(t, p, cs, 3000)
	// endpoint 0 loses every draw it is in, so it is never picked
	if got[0] != 0 {
		t.Errorf("loaded endpoint picked %d times, want 0", got[0])
	}
	one := cands(1)
	if p.Pick(one, 0) != 0 {
		t.Error("single candidate not picked")
	}
}

func TestFirstInOrder(t *testing.T) {
	p, _ := New("first")
	cs := cands(1, 1, 1)
	if got := p.Pick(cs, 0); got != 0 {
		t.Errorf("got %d, want 0", got)
	}
	cs[0].Usable = false
	if got := p.Pick(cs, 0); got != 1 {
		t.Errorf("primary down: got %d, want 1 (first backup)", got)
	}
}

func TestRingHashStickyAndMinimalMove(t *testing.T) {
	p, _ := New("ring_hash")
	cs := cands(1, 1, 1, 1)
	const keys = 4000
	before := make([]int, keys)
	for k := range before {
		before[k] = p.Pick(cs, HashString(fmt.Sprintf("client-%d", k)))
		if again := p.Pick(cs, HashString(fmt.Sprintf("client-%d", k))); again != before[k] {
			t.Fatalf("key %d: not sticky (%d then %d)", k, before[k], again)
		}
	}
	spread := make([]int, 4)
	for _, b := range before {
		spread[b]++
	}
	for i, n := range spread {
		if n < keys/4*7/10 || n > keys/4*13/10 {
			t.Errorf("endpoint %d got %d of %d keys, want about %d", i, n, keys, keys/4)
		}
	}
	cs[2].Usable = false
	for k := range before {
		got := p.Pick(cs, HashString(fmt.Sprintf("client-%d", k)))
		if before[k] != 2 && got != before[k] {
			t.Fatalf("key %d moved from %d to %d although its endpoint is still up", k, before[k], got)
		}
	}
	cs[2].Usable = true
	for k := range before {
		if got := p.Pick(cs, HashString(fmt.Sprintf("client-%d", k))); got != before[k] {
			t.Fatalf("key %d: got %d after recovery, want %d", k, got, before[k])
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, name := range config.BalancePolicies {
		b.Run(name, func(b *testing.B) {
			p, _ := New(name)
			cs := cands(1, 2, 1, 3, 1, 1, 1, 1)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				p.Pick(cs, uint64(i)*0x9e3779b97f4a7c15)
			}
		})
	}
}
