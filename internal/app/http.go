package app

import (
	"crypto/tls"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/breaker"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/credentials"
	"github.com/attache-proxy/attache/internal/httpproxy"
	"github.com/attache-proxy/attache/internal/redisproxy"
	"github.com/attache-proxy/attache/internal/upstream"
)

func (a *App) buildHTTPCluster(cc config.Cluster, up *upstream.Cluster, tlsFor func(string) *tls.Config, creds *credentials.Set) *httpproxy.Cluster {
	o := httpproxy.ClusterOptions{
		Upstream:       up,
		Version:        cc.HTTP.Version,
		MaxIdle:        cc.HTTP.MaxIdlePerEndpoint,
		IdleTimeout:    cc.HTTP.IdleTimeout.D(),
		ConnectTimeout: cc.ConnectTimeout.D(),
		TLS:            tlsFor,
		Credentials:    creds,
	}
	if k := cc.KubernetesAPI; k != nil {
		o.Filter = httpproxy.NewFilter(*k)
	}
	if b := cc.CircuitBreaker; b != nil {
		o.Limits = httpproxy.Limits{MaxConnections: b.MaxConnections, MaxPending: b.MaxPending, MaxRequests: b.MaxRequests, MaxRetries: b.MaxRetries}
		if b.ConsecutiveFailures > 0 {
			name := cc.Name
			o.Breaker = breaker.New(b.ConsecutiveFailures, b.OpenFor.D(), nil, func(s breaker.State) {
				a.metrics.BreakerTransitions.WithLabelValues(name, s.String()).Inc()
				a.log.Warn("circuit breaker", "cluster", name, "state", s.String())
			})
		}
	}
	return httpproxy.NewCluster(o)
}

// newHTTPServer starts the server of an HTTP listener. The event-loop
// engine serves cleartext HTTP/1.1 (with the goroutine fast path for what
// it hands over) unless ATTACHE_HTTP_FAST_PATH in the environment says
// otherwise, the escape hatches should either misbehave: "goroutine" for
// the goroutine fast path alone, "off" for net/http for everything, as
// for TLS, HTTP/2 and upgrades.
func (a *App) newHTTPServer(lc config.Listener) *httpproxy.Server {
	path := httpproxy.PathEngine
	switch v, _ := a.opts.LookupEnv("ATTACHE_HTTP_FAST_PATH"); v {
	case "off":
		path = httpproxy.PathNetHTTP
	case "goroutine":
		path = httpproxy.PathGoroutine
	}
	return httpproxy.NewServer(lc.IdleTimeout.D(), path, a.loops, a.log.With("listener", lc.Name))
}

func (a *App) httpHandler(lc config.Listener, clusters map[string]*clusterRT) *httpproxy.Handler {
	table := httpproxy.NewTable(lc, func(name string) *httpproxy.Cluster { return clusters[name].http })
	var access *slog.Logger
	switch lc.AccessLog {
	case "json":
		access = slog.New(slog.NewJSONHandler(a.opts.AccessLogOutput, nil))
	case "text":
		access = slog.New(slog.NewTextHandler(a.opts.AccessLogOutput, nil))
	}
	m := a.metrics
	return httpproxy.NewHandler(httpproxy.HandlerOptions{
		Table:     table,
		Log:       a.log.With("listener", lc.Name),
		AccessLog: access,
		Observer: httpproxy.Observer{
			Requests: func(listener, route, cluster string) func(int, time.Duration) {
				// Counters by status class are made on first use, so that
				// classes never seen stay out of /metrics.
				var byClass [6]atomic.Pointer[prometheus.Counter]
				hist := m.HTTPDuration.WithLabelValues(listener, route, cluster)
				return func(status int, d time.Duration) {
					class := min(max(status/100, 0), 5)
					c := byClass[class].Load()
					if c == nil {
						cc := m.HTTPRequests.WithLabelValues(listener, route, cluster, strconv.Itoa(class)+"xx")
						c = &cc
						byClass[class].Store(c)
					}
					(*c).Inc()
					hist.Observe(d.Seconds())
				}
			},
			Retry:      func(cluster string) { m.HTTPRetries.WithLabelValues(cluster).Inc() },
			Overloaded: func(cluster, reason string) { m.HTTPOverloaded.WithLabelValues(cluster, reason).Inc() },
		},
	})
}

func (a *App) buildRedisPool(cc config.Cluster, tlsFor func(string) *tls.Config) (*redisproxy.Pool, error) {
	r := cc.Redis
	o := redisproxy.Options{
		TLS:     tlsFor,
		Cluster: cc.Name, Hash: r.Hash, Distribution: r.Distribution, HashTag: r.HashTag,
		AutoEject: r.AutoEjectHosts, ServerFailureLimit: r.ServerFailureLimit, ServerRetryTimeout: r.ServerRetryTimeout.D(),
		ServerConnections: r.ServerConnections, Timeout: r.Timeout.D(), ConnectTimeout: cc.ConnectTimeout.D(),
		Username: r.Username, Password: r.Password, Log: a.log, Loops: a.loops,
		Observer: redisproxy.Observer{
			Request: func(shard string) func(bool, time.Duration) {
				ok := a.metrics.RedisRequests.WithLabelValues(cc.Name, shard, "ok")
				failed := a.metrics.RedisRequests.WithLabelValues(cc.Name, shard, "error")
				latency := a.metrics.RedisDuration.WithLabelValues(cc.Name, shard)
				return func(good bool, d time.Duration) {
					if good {
						ok.Inc()
					} else {
						failed.Inc()
					}
					latency.Observe(d.Seconds())
				}
			},
			Ejected: func(shard string) { a.metrics.RedisEjections.WithLabelValues(cc.Name, shard).Inc() },
		},
	}
	for _, e := range cc.Endpoints {
		o.Shards = append(o.Shards, redisproxy.Shard{Addr: e.Address, Name: e.Name, Weight: e.Weight})
	}
	return redisproxy.NewPool(o)
}
