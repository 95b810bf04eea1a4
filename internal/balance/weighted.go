package balance

import "sync"

// weighted is smooth weighted round robin (as in nginx): over any window of
// total-weight picks each endpoint is taken weight times, interleaved rather
// than in bursts.
type weighted struct {
	mu      sync.Mutex
	current map[string]int // by Candidate.ID
}

func newWeighted() *weighted { return &weighted{current: map[string]int{}} }

func (w *weighted) Pick(cands []Candidate, _ uint64) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	total, best := 0, -1
	for i, c := range cands {
		if !c.Usable {
			continue
		}
		w.current[c.ID] += c.Weight
		total += c.Weight
		if best < 0 || w.current[c.ID] > w.current[cands[best].ID] {
			best = i
		}
	}
	if best >= 0 {
		w.current[cands[best].ID] -= total
	}
	if len(w.current) > 2*len(cands)+8 {
		// Endpoints come and go with discovery; forget the gone ones.
		live := make(map[string]bool, len(cands))
		for _, c := range cands {
			live[c.ID] = true
		}
		for id := range w.current {
			if !live[id] {
				delete(w.current, id)
			}
		}
	}
	return best
}
