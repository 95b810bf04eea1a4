package httpproxy

import (
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/breaker"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/listener"
	"github.com/attache-proxy/attache/internal/metrics"
	"github.com/attache-proxy/attache/internal/protocol"
)

// Protocol is protocol http. Every cluster gets a Cluster (its connection
// pools, limits and breaker), since any HTTP route may name it. A listener
// is a Server, kept while the listener keeps its name and address, and a
// Handler of the generation's routes, swapped into the Server when the
// generation starts.
type Protocol struct {
	m metricSet
}

// metricSet is the counters of HTTP requests, registered by Open.
type metricSet struct {
	// attache_http_requests_total{listener,route,cluster,code}: code is
	// the status class, "2xx" .. "5xx".
	requests *prometheus.CounterVec
	// attache_http_request_duration_seconds{listener,route,cluster}
	duration *prometheus.HistogramVec
	// attache_http_retries_total{cluster}
	retries *prometheus.CounterVec
	// attache_http_overloaded_total{cluster,reason}: requests refused by
	// a circuit-breaking threshold.
	overloaded *prometheus.CounterVec
	// attache_http_breaker_transitions_total{cluster,state}
	breaker *prometheus.CounterVec
	// attache_http_sticky_requests_total{listener,route,key}: what the
	// requests of a sticky split were keyed on: "header", "cookie",
	// "client_ip" (the end user's address) or "pod" (no user identity).
	sticky *prometheus.CounterVec
}

var _ interface {
	protocol.Protocol
	protocol.ALPN
} = (*Protocol)(nil)

// Name is "http".
func (*Protocol) Name() string { return "http" }

// TimesLatency: balance ewma is fed by its listeners.
func (*Protocol) TimesLatency() {}

// ListenerOptions returns nil: no listeners[].http.
func (*Protocol) ListenerOptions() any { return nil }

// ClusterOptions returns nil: no clusters[].http.
func (*Protocol) ClusterOptions() any { return nil }

// Open registers the metrics. (A Server starts its own engines.)
func (p *Protocol) Open(proc *protocol.Process) error {
	r := proc.Metrics.Registry
	p.m = metricSet{
		requests: metrics.Counter(r, "attache_http_requests_total", "HTTP requests by status class.", "listener", "route", "cluster", "code"),
		duration: metrics.Histogram(r, "attache_http_request_duration_seconds", "HTTP request duration, from the request's arrival to the end of the response.",
			0.0005, 2.5, 14, "listener", "route", "cluster"),
		retries:    metrics.Counter(r, "attache_http_retries_total", "HTTP retries sent.", "cluster"),
		overloaded: metrics.Counter(r, "attache_http_overloaded_total", "HTTP requests refused by a circuit-breaking threshold.", "cluster", "reason"),
		breaker:    metrics.Counter(r, "attache_http_breaker_transitions_total", "Circuit breaker state changes.", "cluster", "state"),
		sticky:     metrics.Counter(r, "attache_http_sticky_requests_total", "Requests of sticky splits, by what they were keyed on.", "listener", "route", "key"),
	}
	return nil
}

// Close does nothing.
func (*Protocol) Close() {}

// ALPN offers HTTP/2 before HTTP/1.1 on TLS listeners.
func (*Protocol) ALPN() []string { return []string{"h2", "http/1.1"} }

var descBreaker = prometheus.NewDesc("attache_http_breaker_state",
	"Circuit breaker state: 0 closed, 1 open, 2 half-open.", []string{"cluster"}, nil)

// Describe sends the breaker state's descriptor.
func (*Protocol) Describe(ch chan<- *prometheus.Desc) { ch <- descBreaker }

// NewCluster builds the cluster's Cluster.
func (p *Protocol) NewCluster(env *protocol.Env) (protocol.Instance, error) {
	c := env.Cluster
	cc := &c.Config
	o := ClusterOptions{
		Upstream:       c.Upstream,
		Version:        cc.HTTP.Version,
		MaxIdle:        cc.HTTP.MaxIdlePerEndpoint,
		IdleTimeout:    cc.HTTP.IdleTimeout.D(),
		ConnectTimeout: cc.ConnectTimeout.D(),
		TLS:            c.TLS,
		Credentials:    c.Credentials,
	}
	if k := cc.KubernetesAPI; k != nil {
		o.Filter = NewFilter(*k)
	}
	if b := cc.CircuitBreaker; b != nil {
		o.Limits = Limits{MaxConnections: b.MaxConnections, MaxPending: b.MaxPending, MaxRequests: b.MaxRequests, MaxRetries: b.MaxRetries}
		if b.ConsecutiveFailures > 0 {
			name, transitions, log := cc.Name, p.m.breaker, env.Log
			o.Breaker = breaker.New(b.ConsecutiveFailures, b.OpenFor.D(), nil, func(s breaker.State) {
				transitions.WithLabelValues(name, s.String()).Inc()
				log.Warn("circuit breaker", "cluster", name, "state", s.String())
			})
		}
	}
	return &clusterInstance{c: NewCluster(o)}, nil
}

// clusterInstance is a cluster's Cluster.
type clusterInstance struct{ c *Cluster }

func (*clusterInstance) Start() {}
func (*clusterInstance) Drain() {}

// Stop closes the Cluster's idle connections and stops its pools (a
// carried-over cluster is never stopped).
func (i *clusterInstance) Stop(protocol.Instance, *config.Config, *config.Config) { i.c.Close() }

// Status shows the breaker's state.
func (i *clusterInstance) Status() protocol.Status {
	if b := i.c.Breaker(); b != nil {
		return protocol.Status{{Key: "circuit_breaker", Value: b.State().String()}} // closed | open | half_open
	}
	return nil
}

func (i *clusterInstance) Collect(ch chan<- prometheus.Metric) {
	if b := i.c.Breaker(); b != nil {
		ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, float64(b.State()), i.c.Name())
	}
}

// clusterOf returns the Cluster of a generation's cluster.
func clusterOf(c *protocol.Cluster) *Cluster { return c.Instances["http"].(*clusterInstance).c }

// NewListener builds the listener's Handler, and its Server unless prev
// has one on the same address.
func (p *Protocol) NewListener(env *protocol.Env, prev protocol.Listener) (protocol.Listener, error) {
	lc := env.Listener
	i := &instance{addr: lc.Address}
	if old, ok := prev.(*instance); ok && old.addr == lc.Address {
		i.srv = old.srv
	} else {
		i.srv = NewServer(lc.IdleTimeout.D(), fastPath(env.LookupEnv), env.Loops, env.Log)
	}
	table := NewTable(*lc, func(name string) *Cluster { return clusterOf(env.Clusters(name)) })
	var access *slog.Logger
	switch lc.AccessLog {
	case "json":
		access = slog.New(slog.NewJSONHandler(env.AccessLog, nil))
	case "text":
		access = slog.New(slog.NewTextHandler(env.AccessLog, nil))
	}
	m := p.m
	i.handler = NewHandler(HandlerOptions{
		Table:     table,
		Log:       env.Log,
		AccessLog: access,
		Observer: Observer{
			Requests: func(listener, route, cluster string) func(int, time.Duration) {
				// Counters by status class are made on first use, so that
				// classes never seen stay out of /metrics.
				var byClass [6]atomic.Pointer[prometheus.Counter]
				hist := m.duration.WithLabelValues(listener, route, cluster)
				return func(status int, d time.Duration) {
					class := min(max(status/100, 0), 5)
					c := byClass[class].Load()
					if c == nil {
						cc := m.requests.WithLabelValues(listener, route, cluster, strconv.Itoa(class)+"xx")
						c = &cc
						byClass[class].Store(c)
					}
					(*c).Inc()
					hist.Observe(d.Seconds())
				}
			},
			Retry:      func(cluster string) { m.retries.WithLabelValues(cluster).Inc() },
			Overloaded: func(cluster, reason string) { m.overloaded.WithLabelValues(cluster, reason).Inc() },
			Sticky:     func(listener, route, key string) func() { return m.sticky.WithLabelValues(listener, route, key).Inc },
		},
	})
	return i, nil
}

// fastPath is the Path of new servers: the event-loop engine serves
// cleartext HTTP/1.1 (with the goroutine fast path for what it hands over)
// unless ATTACHE_HTTP_FAST_PATH in the environment says otherwise, the
// escape hatches should either misbehave: "goroutine" for the goroutine
// fast path alone, "off" for net/http for everything, as for TLS, HTTP/2
// and upgrades.
func fastPath(lookupEnv func(string) (string, bool)) Path {
	switch v, _ := lookupEnv("ATTACHE_HTTP_FAST_PATH"); v {
	case "off":
		return PathNetHTTP
	case "goroutine":
		return PathGoroutine
	}
	return PathEngine
}

// instance is an http listener: its Server and this generation's Handler.
type instance struct {
	addr    string
	srv     *Server
	handler *Handler
}

func (i *instance) Handler() listener.Handler { return i.srv }

// Start swaps the generation's routes into the Server.
func (i *instance) Start() { i.srv.Update(i.handler) }

// Drain asks the Server's clients to go.
func (i *instance) Drain() { i.srv.Drain() }

// Stop closes the Server unless next carries it over; its requests get
// the drain timeout to finish.
func (i *instance) Stop(next protocol.Instance, from, _ *config.Config) {
	if n, ok := next.(*instance); ok && n.srv == i.srv {
		return
	}
	go i.srv.Close(from.DrainTimeout.D())
}

// Status shows the listener's sticky splits: what they key on, and the
// pod's key, which the environment or the host name may have supplied.
func (i *instance) Status() protocol.Status {
	var routes []stickyStatus
	for _, r := range i.handler.table.Routes {
		if r.sticky != nil && len(r.targets) > 1 {
			routes = append(routes, r.sticky.status(r.Name))
		}
	}
	if routes == nil {
		return nil
	}
	return protocol.Status{{Key: "sticky", Value: routes}}
}
func (*instance) Collect(chan<- prometheus.Metric) {}
