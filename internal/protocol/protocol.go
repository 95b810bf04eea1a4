// Package protocol is the seam between app and the protocols attache
// proxies (tcpproxy, httpproxy, redisproxy, pgproxy). app builds, swaps,
// drains and stops what a Protocol builds, and reads its status and
// metrics, without knowing any protocol by name.
//
// A Protocol builds Instances: one per cluster for a protocol that keeps
// state per cluster (HTTP connection pools, a Redis shard ring), and one per
// listener of its protocol, which serves the listener's connections. Each
// generation of the configuration (see app) holds its instances; a reload
// builds the next generation's instances aside, handing each the one it
// replaces, so that a protocol decides what to carry over (a pooler whose
// settings did not change, a server that keeps its address).
//
// The lifecycle of an Instance:
//
//	NewCluster / NewListener   build aside; nothing serves yet, an error aborts the reload
//	Start                      the generation is live (listeners bound)
//	Drain                      shutdown begins: ask clients to leave, keep serving
//	Stop(next, from, to)       the generation is replaced by to (nil: the process stops)
//
// Each protocol's folder holds its Protocol (protocol.go in the package);
// the list of protocols is internal/protocols.
package protocol

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/credentials"
	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/health"
	"github.com/attache-proxy/attache/internal/listener"
	"github.com/attache-proxy/attache/internal/metrics"
	"github.com/attache-proxy/attache/internal/tlsconfig"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Protocol is one protocol attache proxies. app makes one of each per
// process (internal/protocols) and calls Open before building anything.
// Its methods, and those of Instance but Status and Collect, are called by
// one goroutine at a time (app serialises reloads and shutdown); Describe,
// Status and Collect may be called at any time, concurrently.
type Protocol interface {
	// Schema is the protocol's name in the configuration
	// (listeners[].protocol) and its options (listeners[].NAME,
	// clusters[].NAME), which the protocol's package declares, defaults
	// and validates: config.Parse takes the protocols' schemas.
	config.Schema
	// Open starts what every instance of the protocol shares for the life
	// of the process (event loops); Close ends it, after every listener is
	// closed.
	Open(p *Process) error
	Close()
	// NewCluster builds the protocol's state for one cluster of a
	// generation, or returns nil when the protocol keeps none for it. It is
	// called for every cluster the generation builds (an unchanged cluster
	// is carried over with its instances).
	NewCluster(env *Env) (Instance, error)
	// NewListener builds the instance that serves one listener of the
	// protocol. prev is the listener's instance in the running generation
	// (nil when it had none, or one of another protocol): the new instance
	// may carry over what prev holds, and Stop(next) on prev then keeps it.
	NewListener(env *Env, prev Listener) (Listener, error)
	// Describe sends the descriptors of the metrics that the protocol's
	// instances send from Collect.
	Describe(ch chan<- *prometheus.Desc)
}

// Instance is what a Protocol built for one cluster or one listener of a
// generation.
type Instance interface {
	// Start is called once the generation that holds the instance serves;
	// it starts background work (file watches) and applies what was
	// prepared aside (a listener's new routes, a new users file).
	Start()
	// Drain is called when shutdown begins: clients are asked to leave
	// (Connection: close) while new connections are still served.
	Drain()
	// Stop is called when the generation that holds the instance is
	// replaced, or fails to start, or the process stops. next is the
	// instance that takes its place for the same cluster or listener (nil:
	// none); Stop ends what next does not carry over, letting open
	// connections finish for from.DrainTimeout. from is the configuration
	// of the generation left, to the one that follows (nil when the process
	// stops and the drain is over: what is left is cut).
	Stop(next Instance, from, to *config.Config)
	// Status is what the instance adds to its listener's or cluster's
	// entry in /status; nil for nothing.
	Status() Status
	// Collect sends the instance's metrics read at scrape time (see
	// Protocol.Describe).
	Collect(ch chan<- prometheus.Metric)
}

// Listener is the Instance of one listener.
type Listener interface {
	Instance
	// Handler serves the listener's connections.
	Handler() listener.Handler
}

// Status is an instance's part of a /status entry: JSON fields, in order.
type Status []Field

// Field is one JSON field of a Status.
type Field struct {
	Key   string
	Value any
}

// Process is what every protocol shares for the life of the process.
type Process struct {
	// Loops are the event loops of the process (started with the first
	// engine that asks for them), shared by every protocol's engines. nil
	// (ATTACHE_EVENT_LOOPS=off) selects every protocol's portable path,
	// which serves by goroutines, as on a platform without epoll: the one
	// switch between a protocol's engine and its portable path.
	Loops   *evloop.Group
	Log     *slog.Logger
	Metrics *metrics.Metrics
	// LookupEnv reads the process environment (escape hatches such as
	// ATTACHE_HTTP_FAST_PATH, read once by the protocol's Open).
	LookupEnv func(string) (string, bool)
	// AccessLog receives HTTP access logs.
	AccessLog io.Writer
	// WatchTLS calls reload whenever files change, until ctx ends; a
	// failed reload is logged and counted for owner ("listener NAME ...").
	WatchTLS func(ctx context.Context, owner string, files []string, reload func() error)
	// PeerRejected returns what a TLS configuration of owner calls when a
	// peer's certificate presents none of the names of its match_san: the
	// refusal is logged and counted.
	PeerRejected func(owner string) func(*tlsconfig.Rejection)
}

// Env is what an instance is built from: the process, the configuration
// of the generation being built, and the cluster or listener.
type Env struct {
	*Process
	// Config is the whole configuration being applied.
	Config *config.Config
	// Cluster is the cluster being built (NewCluster), or the listener's
	// cluster (NewListener; nil when the listener names none).
	Cluster *Cluster
	// Clusters returns a cluster of the generation by name (HTTP routes
	// name several), or nil.
	Clusters func(name string) *Cluster
	// Listener is the listener being built; nil in NewCluster.
	Listener *config.Listener
	// Log is the process log, with the listener's name for NewListener.
	Log *slog.Logger
}

// Cluster is a cluster of a generation, as protocols see it. A cluster
// whose configuration did not change is carried into the next generation
// as the same *Cluster.
type Cluster struct {
	Config   config.Cluster
	Upstream *upstream.Cluster
	// TLS is the client TLS configuration for an endpoint address; nil
	// without tls.
	TLS         func(addr string) *tls.Config
	Credentials *credentials.Set // nil: none
	// Instances are the protocols' instances of the cluster, by protocol
	// name (see Protocol.NewCluster).
	Instances map[string]Instance
}

// Checker is implemented by a Protocol that has a health check type of its
// name (health_check.type: redis, postgres): it logs in the way its
// clients do. config.HealthChecker makes the type a valid one.
type Checker interface {
	config.HealthChecker
	Checker(hc *config.HealthCheck, c *Cluster) health.Checker
}

// ALPN is implemented by a Protocol whose TLS listeners negotiate
// application protocols; they are offered in this order.
type ALPN interface {
	ALPN() []string
}

// Plain is the Listener of a protocol whose listener is only its
// handler: nothing to start, drain, carry over, report or count beyond
// what the handler does itself (tcp, redis).
type Plain struct{ H listener.Handler }

func (p *Plain) Handler() listener.Handler                   { return p.H }
func (*Plain) Start()                                        {}
func (*Plain) Drain()                                        {}
func (*Plain) Stop(Instance, *config.Config, *config.Config) {}
func (*Plain) Status() Status                                { return nil }
func (*Plain) Collect(chan<- prometheus.Metric)              {}
