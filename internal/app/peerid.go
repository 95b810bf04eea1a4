package app

import (
	"net"
	"strings"
	"sync"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/tlsconfig"
)

// peerLogEvery is how often the same refusal (one peer host presenting
// the same names) is logged again; a health check or a client retrying in
// a loop would otherwise write a line each time. Every refusal is counted.
const peerLogEvery = 10 * time.Second

// peerLogKeys bounds the refusals remembered per owner for peerLogEvery.
const peerLogKeys = 256

// peerRejected returns what a TLS configuration of owner ("listener web",
// "cluster orders", "listener db server_tls") calls when a peer's
// certificate chained to the CA but presented none of the names of
// match_san: a count, and a log line naming the peer, the names it
// presented and the names expected (repeats of the same refusal within
// peerLogEvery are folded into the next line's "repeated").
func (a *App) peerRejected(owner string) func(*tlsconfig.Rejection) {
	n := a.metrics.PeerRejections.WithLabelValues(owner)
	type seen struct {
		at       time.Time
		repeated int
	}
	var mu sync.Mutex
	last := map[string]*seen{}
	return func(r *tlsconfig.Rejection) {
		n.Inc()
		presented := "(none)"
		if len(r.Presented) > 0 {
			presented = strings.Join(r.Presented, " ")
		}
		host, _, err := net.SplitHostPort(r.Peer)
		if err != nil {
			host = r.Peer
		}
		key, now := host+" "+presented, time.Now()
		mu.Lock()
		s := last[key]
		if s != nil && now.Sub(s.at) < peerLogEvery {
			s.repeated++
			mu.Unlock()
			return
		}
		repeated := 0
		if s != nil {
			repeated = s.repeated
		}
		if len(last) >= peerLogKeys {
			for k, v := range last {
				if now.Sub(v.at) >= peerLogEvery {
					delete(last, k)
				}
			}
		}
		if len(last) < peerLogKeys || s != nil {
			last[key] = &seen{at: now}
		}
		mu.Unlock()
		args := []any{"owner", owner, "peer", r.Peer, "presented", presented, "expected", strings.Join(r.Expected, " ")}
		if repeated > 0 {
			args = append(args, "repeated", repeated)
		}
		a.log.Warn("TLS peer refused: its certificate presents none of the names in match_san", args...)
	}
}

// peerNames is a match_san list as /status shows it: "uri:…", "dns:…".
func peerNames(ms []config.SANMatch) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.String())
	}
	return out
}
