package app

import (
	"strings"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/tlsconfig"
)

// peerRejected returns what a TLS configuration of owner ("listener web",
// "cluster orders", "listener db server_tls") calls when a peer's
// certificate chained to the CA but presented none of the names of
// match_san: a log line naming the peer, the names it presented and the
// names expected, and a count.
func (a *App) peerRejected(owner string) func(*tlsconfig.Rejection) {
	n := a.metrics.PeerRejections.WithLabelValues(owner)
	return func(r *tlsconfig.Rejection) {
		n.Inc()
		presented := "(none)"
		if len(r.Presented) > 0 {
			presented = strings.Join(r.Presented, " ")
		}
		a.log.Warn("TLS peer refused: its certificate presents none of the names in match_san",
			"owner", owner, "peer", r.Peer, "presented", presented, "expected", strings.Join(r.Expected, " "))
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
