package redisproxy

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/health"
	"github.com/attache-proxy/attache/internal/metrics"
	"github.com/attache-proxy/attache/internal/protocol"
)

// Protocol is protocol redis. A cluster that a redis listener shards over
// (it has a redis section) gets a Pool: its ring, server connections and
// engines. A listener is a Handler over its cluster's Pool, built again at
// each reload.
type Protocol struct {
	m metricSet
}

// metricSet is the counters of Redis commands, registered by Open.
type metricSet struct {
	// attache_redis_requests_total{cluster,shard,result}: result is "ok"
	// or "error" (the shard failed or timed out).
	requests *prometheus.CounterVec
	// attache_redis_request_duration_seconds{cluster,shard}
	duration *prometheus.HistogramVec
	// attache_redis_ejections_total{cluster,shard}: auto_eject_hosts
	ejections *prometheus.CounterVec
}

var _ interface {
	protocol.Protocol
	protocol.Checker
} = (*Protocol)(nil)

// Name is "redis".
func (*Protocol) Name() string { return "redis" }

// ChecksHealth: health_check.type redis is the protocol's Checker.
func (*Protocol) ChecksHealth() {}

// Open registers the metrics. (Each Pool starts its own engines.)
func (p *Protocol) Open(proc *protocol.Process) error {
	r := proc.Metrics.Registry
	p.m = metricSet{
		requests:  metrics.Counter(r, "attache_redis_requests_total", "Redis commands sent to a shard, by result.", "cluster", "shard", "result"),
		ejections: metrics.Counter(r, "attache_redis_ejections_total", "Shards ejected by auto_eject_hosts.", "cluster", "shard"),
		duration: metrics.Histogram(r, "attache_redis_request_duration_seconds", "Time from a command's arrival to its shard's reply.",
			0.00005, 2.5, 14, "cluster", "shard"),
	}
	return nil
}

// Close does nothing: the pools are stopped with their clusters.
func (*Protocol) Close() {}

var descConns = prometheus.NewDesc("attache_redis_server_connections",
	"Open connections to a Redis shard.", []string{"cluster", "shard"}, nil)

// Describe sends the shard connections' descriptor.
func (*Protocol) Describe(ch chan<- *prometheus.Desc) { ch <- descConns }

// Checker is health_check type redis: PING, after AUTH with the cluster's
// redis username and password, through the cluster's TLS.
func (*Protocol) Checker(_ *config.HealthCheck, c *protocol.Cluster) health.Checker {
	var user, pass string
	if r := clusterOptions(&c.Config); r != nil {
		user, pass = r.Username, r.Password
	}
	tlsFor := c.TLS
	return health.CheckerFunc(func(ctx context.Context, addr string) error {
		return Ping(ctx, addr, user, pass, tlsFor)
	})
}

// NewCluster builds the Pool of a cluster with a redis section.
func (p *Protocol) NewCluster(env *protocol.Env) (protocol.Instance, error) {
	cc := &env.Cluster.Config
	r := clusterOptions(cc)
	if r == nil {
		return nil, nil
	}
	m, name := p.m, cc.Name
	o := Options{
		Upstream: env.Cluster.Upstream,
		Cluster:  name, Hash: r.Hash, Distribution: r.Distribution, HashTag: r.HashTag,
		AutoEject: r.AutoEjectHosts, ServerFailureLimit: r.ServerFailureLimit, ServerRetryTimeout: r.ServerRetryTimeout.D(),
		ServerConnections: r.ServerConnections, Timeout: r.Timeout.D(), ConnectTimeout: cc.ConnectTimeout.D(),
		Username: r.Username, Password: r.Password, Log: env.Log, Loops: env.Loops,
		Observer: Observer{
			Request: func(shard string) func(bool, time.Duration) {
				ok := m.requests.WithLabelValues(name, shard, "ok")
				failed := m.requests.WithLabelValues(name, shard, "error")
				latency := m.duration.WithLabelValues(name, shard)
				return func(good bool, d time.Duration) {
					if good {
						ok.Inc()
					} else {
						failed.Inc()
					}
					latency.Observe(d.Seconds())
				}
			},
			Ejected: func(shard string) { m.ejections.WithLabelValues(name, shard).Inc() },
		},
	}
	pool, err := NewPool(o)
	if err != nil {
		return nil, err
	}
	return &clusterInstance{name: name, pool: pool}, nil
}

// clusterInstance is the Pool of a cluster.
type clusterInstance struct {
	name string
	pool *Pool
}

func (*clusterInstance) Start() {}
func (*clusterInstance) Drain() {}

// Stop ends the Pool (a carried-over cluster is never stopped). A new
// connection gets the new pool; the clients it serves move to the
// cluster's new pool at a command boundary. A dropped cluster's clients,
// and those of a cluster whose listeners changed (a client cannot tell
// which listener it came through, and one re-pointed must not stay on the
// old cluster's keys), stay until they leave or the drain ends. When the
// process stops, the drain is over: the clients left are cut.
func (i *clusterInstance) Stop(next protocol.Instance, from, to *config.Config) {
	if to == nil {
		i.pool.Close(0)
		return
	}
	var successor *Pool
	if n, ok := next.(*clusterInstance); ok && slices.Equal(listeners(from, i.name), listeners(to, i.name)) {
		successor = n.pool
	}
	go i.pool.Replace(successor, from.DrainTimeout.D())
}

// listeners returns the names of cfg's redis listeners that shard over
// cluster, in config order.
func listeners(cfg *config.Config, cluster string) []string {
	var names []string
	for _, l := range cfg.Listeners {
		if l.Protocol == "redis" && l.Cluster == cluster {
			names = append(names, l.Name)
		}
	}
	return names
}

// Status shows the shards.
func (i *clusterInstance) Status() protocol.Status {
	if s := i.pool.Shards(); len(s) > 0 {
		return protocol.Status{{Key: "redis_shards", Value: s}}
	}
	return nil
}

func (i *clusterInstance) Collect(ch chan<- prometheus.Metric) {
	for _, sh := range i.pool.Shards() {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(sh.Connections), i.name, sh.Name)
	}
}

// NewListener builds the listener's Handler over its cluster's Pool.
func (*Protocol) NewListener(env *protocol.Env, _ protocol.Listener) (protocol.Listener, error) {
	pool := env.Cluster.Instances["redis"].(*clusterInstance).pool
	return &protocol.Plain{H: &Handler{Pool: pool, Password: listenerOptions(env.Listener).Password, Log: env.Log}}, nil
}
