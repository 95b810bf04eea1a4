package balance

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// The defaults of the ewma policy, Linkerd's: an endpoint not observed yet
// is taken to answer in 30 ms, and a peak is forgotten with a time
// constant of 10 s.
const (
	DefaultEWMADecay      = 10 * time.Second
	DefaultEWMADefaultRTT = 30 * time.Millisecond
)

// RTT is one endpoint's latency estimate for the ewma policy. Its zero
// value is an endpoint never seen. The endpoint owns it, so that it
// carries over reloads and discovery updates with the endpoint's other
// state; the EWMA picker reads and writes it.
type RTT struct {
	mu       sync.Mutex
	est      float64   // nanoseconds, as of at
	at       time.Time // zero: never seen
	observed bool      // est is a measurement, not the default
	tried    bool      // something was observed, a failure at least
}

// Estimate returns the estimate at now under decay, and whether it is
// a measurement (false: the default RTT, decaying since first seen, or
// nothing yet when never seen).
func (r *RTT) Estimate(now time.Time, decay time.Duration) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at.IsZero() {
		return 0, false
	}
	return time.Duration(r.value(now, decay)), r.observed
}

// value is the estimate decayed to now; r.mu is held and r seen.
func (r *RTT) value(now time.Time, decay time.Duration) float64 {
	dt := now.Sub(r.at)
	if dt <= 0 {
		return r.est
	}
	return r.est * math.Exp(-float64(dt)/float64(decay))
}

// seen starts an endpoint never seen at def; r.mu is held.
func (r *RTT) seen(now time.Time, def time.Duration) {
	if r.at.IsZero() {
		r.est, r.at = float64(def), now
	}
}

// EWMA is the peak EWMA policy of Finagle and Linkerd (tower's PeakEwma)
// with the power of two choices: it draws two distinct usable candidates
// at random and takes the one of lower cost, the endpoint's latency
// estimate times its load plus one, divided by its weight:
//
//	cost = rtt × (active + 1) / weight
//
// The estimate is peak-sensitive: an observation above it replaces it at
// once, and otherwise it decays exponentially toward zero with the time
// constant Decay, so that a spike is remembered for a few Decay periods
// and an endpoint that stopped getting requests because it was slow is
// tried again. (Finagle and tower decay the estimate toward zero each time
// a pick reads it and average lower observations in with a weight that
// the time since that read makes negligible; this is that, independent of
// how often picks come.) An endpoint never observed is drawn at once when
// idle; otherwise it starts at DefaultRTT, decaying from when the policy
// first sees it, and its first measurement replaces that guess.
type EWMA struct {
	Decay      time.Duration
	DefaultRTT time.Duration
	Now        func() time.Time
}

// NewEWMA returns the ewma policy with decay and defaultRTT, zero for the
// defaults.
func NewEWMA(decay, defaultRTT time.Duration) *EWMA {
	if decay <= 0 {
		decay = DefaultEWMADecay
	}
	if defaultRTT <= 0 {
		defaultRTT = DefaultEWMADefaultRTT
	}
	return &EWMA{Decay: decay, DefaultRTT: defaultRTT, Now: time.Now}
}

// LatencyObserver is a Picker that learns from observed latencies.
type LatencyObserver interface {
	Picker
	// Observe records that an attempt to the endpoint of r took d. With
	// failed, the attempt failed after d: its latency is at least d, so d
	// may raise the estimate but neither lowers it nor replaces the
	// default of an endpoint never measured (a backend that fails fast
	// must not look fast), and the estimate stops decaying.
	Observe(r *RTT, d time.Duration, failed bool)
	// Estimate is r's estimate now (see RTT.Estimate).
	Estimate(r *RTT) (time.Duration, bool)
}

var _ LatencyObserver = (*EWMA)(nil)

// Observe implements LatencyObserver. A failure renews the estimate's
// last peak rather than letting it decay on, so that an endpoint failing
// fast stays as costly as it last was and does not draw ever more requests.
func (p *EWMA) Observe(r *RTT, d time.Duration, failed bool) {
	now := p.Now()
	rtt := float64(max(d, 0))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tried = true
	switch {
	case failed:
		r.seen(now, p.DefaultRTT)
		r.est, r.at = max(r.est, rtt), now
	case !r.observed:
		r.est, r.at, r.observed = rtt, now, true
	default:
		r.est, r.at = max(r.value(now, p.Decay), rtt), now
	}
}

// Estimate implements LatencyObserver.
func (p *EWMA) Estimate(r *RTT) (time.Duration, bool) { return r.Estimate(p.Now(), p.Decay) }

// Pick implements Picker. It allocates nothing.
func (p *EWMA) Pick(cands []Candidate, _ uint64) int {
	usable := 0
	for _, c := range cands {
		if c.Usable {
			usable++
		}
	}
	switch usable {
	case 0:
		return -1
	case 1:
		return nthUsable(cands, 0)
	}
	a := rand.IntN(usable)
	b := rand.IntN(usable - 1)
	if b >= a {
		b++
	}
	i, j := nthUsable(cands, a), nthUsable(cands, b)
	now := p.Now()
	if p.cost(cands[j], now) < p.cost(cands[i], now) {
		return j
	}
	return i
}

// cost is c's latency estimate at now times its load plus one, per unit
// of weight. An endpoint nothing was observed of, with no request in
// flight, costs nothing, so that it is drawn at once and measured (as in
// Finagle): priced at the default RTT, a new endpoint would wait, in a
// cluster whose endpoints answer faster than that and are rarely busy,
// until its default decayed below their estimates. Its first request
// being in flight, it costs the default RTT until the answer.
func (p *EWMA) cost(c Candidate, now time.Time) float64 {
	load := float64(max(c.Active, 0)+1) / float64(max(c.Weight, 1))
	r := c.RTT
	if r == nil {
		return float64(p.DefaultRTT) * load
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.tried && c.Active <= 0 {
		return 0
	}
	r.seen(now, p.DefaultRTT)
	return r.value(now, p.Decay) * load
}

// nthUsable returns the index of the n-th usable candidate (from 0).
func nthUsable(cands []Candidate, n int) int {
	for i, c := range cands {
		if c.Usable {
			if n == 0 {
				return i
			}
			n--
		}
	}
	return -1
}
