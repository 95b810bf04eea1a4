package memcacheproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/health"
	"github.com/attache-proxy/attache/internal/metrics"
	"github.com/attache-proxy/attache/internal/protocol"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Protocol is protocol memcached: the text protocol, sharded over a
// cluster's endpoints as twemproxy shards it. A cluster used by a
// memcached listener gets a Pool; a listener is a Handler over it, built
// again at each reload.
type Protocol struct {
	// attache_memcached_requests_total{cluster,shard,result}
	requests *prometheus.CounterVec
	// attache_memcached_request_duration_seconds{cluster,shard}
	duration *prometheus.HistogramVec
}

var _ interface {
	protocol.Protocol
	protocol.Checker
} = (*Protocol)(nil)

// Name is "memcached".
func (*Protocol) Name() string { return "memcached" }

// ChecksHealth: health_check.type memcached is the protocol's Checker.
func (*Protocol) ChecksHealth() {}

// ListenerOptions are listeners[].memcached.
func (*Protocol) ListenerOptions() any { return &ListenerOptions{} }

// ClusterOptions are clusters[].memcached.
func (*Protocol) ClusterOptions() any { return &ClusterOptions{} }

// IgnoredClusterFields are the cluster fields a memcached listener does
// not read: keys choose the endpoint, auto_eject_hosts ejects.
func (*Protocol) IgnoredClusterFields() map[string]string {
	return map[string]string{
		"balance":           "keys choose the endpoint (memcached.distribution)",
		"outlier_detection": "a memcached cluster ejects endpoints with memcached.auto_eject_hosts",
		"zone_aware":        "each key has its endpoint, in whatever zone",
	}
}

// Open registers the metrics.
func (p *Protocol) Open(proc *protocol.Process) error {
	r := proc.Metrics.Registry
	p.requests = metrics.Counter(r, "attache_memcached_requests_total", "memcached commands sent to a shard, by result.", "cluster", "shard", "result")
	p.duration = metrics.Histogram(r, "attache_memcached_request_duration_seconds", "Time from a command's arrival to its shard's reply.",
		0.00005, 2.5, 14, "cluster", "shard")
	return nil
}

// Close does nothing: the pools close with their clusters.
func (*Protocol) Close() {}

// Describe sends nothing beyond the registered metrics.
func (*Protocol) Describe(chan<- *prometheus.Desc) {}

// Checker is health_check type memcached: the version command.
func (*Protocol) Checker(_ *config.HealthCheck, c *protocol.Cluster) health.Checker {
	return health.CheckerFunc(func(ctx context.Context, addr string) error { return Version(ctx, addr, c.TLS) })
}

// NewCluster builds the Pool of a cluster that memcached listeners use.
func (p *Protocol) NewCluster(env *protocol.Env) (protocol.Instance, error) {
	cc := &env.Cluster.Config
	o, ok := cc.Options["memcached"].(*ClusterOptions)
	if !ok {
		return nil, nil
	}
	cluster := cc.Name
	pool, err := NewPool(env.Cluster.Upstream, Options{
		Hash: o.Hash, Distribution: o.Distribution, HashTag: o.HashTag, AutoEject: o.AutoEjectHosts,
		Eject:   upstream.FailurePolicy{Limit: o.ServerFailureLimit, RetryTimeout: o.ServerRetryTimeout.D()},
		Timeout: o.Timeout.D(), Idle: o.ServerConnections,
		Observe: func(addr string, ok bool, d time.Duration) {
			result := "ok"
			if !ok {
				result = "error"
			}
			p.requests.WithLabelValues(cluster, addr, result).Inc()
			p.duration.WithLabelValues(cluster, addr).Observe(d.Seconds())
		},
	})
	if err != nil {
		return nil, err
	}
	return &clusterInstance{pool: pool}, nil
}

// clusterInstance is the Pool of a cluster.
type clusterInstance struct{ pool *Pool }

func (*clusterInstance) Start() {}
func (*clusterInstance) Drain() {}

// Stop closes the Pool's idle connections: clients still on the old
// listener keep being served, each command on a new connection, until
// they leave (a carried-over cluster is never stopped).
func (i *clusterInstance) Stop(protocol.Instance, *config.Config, *config.Config) { i.pool.Close() }

// Status shows the ring: each endpoint and whether it is on it.
func (i *clusterInstance) Status() protocol.Status {
	rg, err := i.pool.current(time.Now())
	if err != nil {
		return nil
	}
	type shard struct {
		Address string `json:"address"`
		OnRing  bool   `json:"on_ring"`
	}
	shards := make([]shard, len(rg.eps))
	for j, e := range rg.eps {
		shards[j] = shard{e.Addr, rg.live[j]}
	}
	return protocol.Status{{Key: "memcached_shards", Value: shards}}
}

func (*clusterInstance) Collect(chan<- prometheus.Metric) {}

// NewListener builds the listener's Handler over its cluster's Pool.
func (*Protocol) NewListener(env *protocol.Env, _ protocol.Listener) (protocol.Listener, error) {
	pool := env.Cluster.Instances["memcached"].(*clusterInstance).pool
	o := env.Listener.Options["memcached"].(*ListenerOptions)
	return &protocol.Plain{H: &Handler{Pool: pool, MaxValue: o.MaxValueBytes, IdleTimeout: env.Listener.IdleTimeout.D()}}, nil
}

// Version asks the memcached server at addr for its version, through TLS
// when tlsFor is set: the health check.
func Version(ctx context.Context, addr string, tlsFor func(string) *tls.Config) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if tlsFor != nil {
		c = tls.Client(c, tlsFor(addr))
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("version\r\n")); err != nil {
		return err
	}
	reply, err := readReplyLine(bufio.NewReader(c))
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(reply, []byte("VERSION ")) {
		return fmt.Errorf("version: %q", bytes.TrimSpace(reply))
	}
	return nil
}
