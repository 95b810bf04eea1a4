package balance

import (
	"hash/fnv"
	"slices"
	"strconv"
	"sync/atomic"
)

// pointsPerWeight is how many points on the ring one unit of weight gets.
// 160 keeps the spread of a few endpoints within a few percent.
const pointsPerWeight = 160

// ringHash is consistent hashing on a ring of points built from every
// candidate's ID. A key goes to the first point at or after its hash whose
// endpoint is usable, so when an endpoint goes away only its keys move, and
// when it comes back they return.
type ringHash struct {
	ring atomic.Pointer[ring]
}

type ring struct {
	ids     []string // the candidate IDs and weights it was built from
	weights []int
	hashes  []uint64
	owner   []int // candidate index per point
}

func newRingHash() *ringHash { return &ringHash{} }

func (r *ringHash) Pick(cands []Candidate, key uint64) int {
	if len(cands) == 0 {
		return -1
	}
	rg := r.ring.Load()
	if rg == nil || !rg.builtFrom(cands) {
		rg = buildRing(cands)
		r.ring.Store(rg)
	}
	n := len(rg.hashes)
	i, _ := slices.BinarySearch(rg.hashes, key)
	for k := 0; k < n; k++ {
		if c := rg.owner[(i+k)%n]; cands[c].Usable {
			return c
		}
	}
	return -1
}

// builtFrom reports whether rg was built from the same IDs and weights, in
// order; it allocates nothing, as it runs on every pick.
func (rg *ring) builtFrom(cands []Candidate) bool {
	if len(cands) != len(rg.ids) {
		return false
	}
	for i, c := range cands {
		if c.ID != rg.ids[i] || c.Weight != rg.weights[i] {
			return false
		}
	}
	return true
}

func buildRing(cands []Candidate) *ring {
	type point struct {
		h     uint64
		owner int
	}
	var pts []point
	for i, c := range cands {
		for j := 0; j < c.Weight*pointsPerWeight; j++ {
			pts = append(pts, point{HashString(c.ID + "-" + strconv.Itoa(j)), i})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return a.owner - b.owner
	})
	rg := &ring{hashes: make([]uint64, len(pts)), owner: make([]int, len(pts))}
	for _, c := range cands {
		rg.ids, rg.weights = append(rg.ids, c.ID), append(rg.weights, c.Weight)
	}
	for i, p := range pts {
		rg.hashes[i], rg.owner[i] = p.h, p.owner
	}
	return rg
}

// HashString is the hash used for ring points and keys: 64-bit FNV-1a with
// a final mix so that similar strings spread over the whole ring.
func HashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	x := h.Sum64()
	// splitmix64 finaliser
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
