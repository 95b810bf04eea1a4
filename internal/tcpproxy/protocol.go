package tcpproxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/protocol"
)

// Protocol is protocol tcp: a listener's connections are piped to an
// endpoint of its cluster. Its engines are shared by every tcp listener of
// the process; a listener's Handler is built again at each reload (it
// holds nothing but settings).
type Protocol struct {
	engines *Engines // nil without loops
}

var _ protocol.Protocol = (*Protocol)(nil)

// Name is "tcp".
func (*Protocol) Name() string { return "tcp" }

// TimesLatency: balance ewma is fed by its listeners.
func (*Protocol) TimesLatency() {}

// ListenerOptions returns nil: no listeners[].tcp.
func (*Protocol) ListenerOptions() any { return nil }

// ClusterOptions returns nil: no clusters[].tcp.
func (*Protocol) ClusterOptions() any { return nil }

// Open starts the engines.
func (p *Protocol) Open(proc *protocol.Process) error {
	p.engines = NewEngines(proc.Loops)
	return nil
}

// Close stops the engines and ends their pairs.
func (p *Protocol) Close() { p.engines.Close() }

// NewCluster returns nil: tcp keeps nothing per cluster.
func (*Protocol) NewCluster(*protocol.Env) (protocol.Instance, error) { return nil, nil }

// NewListener builds the listener's Handler.
func (p *Protocol) NewListener(env *protocol.Env, _ protocol.Listener) (protocol.Listener, error) {
	name := env.Cluster.Config.Name
	up := env.Metrics.Bytes.WithLabelValues(name, "to_upstream")
	down := env.Metrics.Bytes.WithLabelValues(name, "from_upstream")
	return &protocol.Plain{H: &Handler{
		Cluster:     env.Cluster.Upstream,
		IdleTimeout: env.Listener.IdleTimeout.D(),
		Counters: Counters{
			ToUpstream:   func(n int) { up.Add(float64(n)) },
			FromUpstream: func(n int) { down.Add(float64(n)) },
		},
		Log:     env.Log,
		Engines: p.engines,
	}}, nil
}

// Describe sends nothing: the bytes counted are metrics.Metrics.Bytes.
func (*Protocol) Describe(chan<- *prometheus.Desc) {}
