package httpproxy

import (
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/breaker"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/jwtauth"
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
	// loops are the process's event loops (nil: the portable path), and
	// netHTTP the escape hatch ATTACHE_HTTP_FAST_PATH=off, read by Open.
	loops   *evloop.Group
	netHTTP bool
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
	// attache_http_jwt_requests_total{listener,route,provider,result}:
	// requests of routes with a token check, by result: "allowed",
	// "no_token" (none, and allow_missing) or why it was refused.
	jwt *prometheus.CounterVec
	// attache_http_jwt_jwks_loads_total{listener,provider,result}: reads
	// of a JWKS file and fetches from a cluster, "ok" or "error".
	jwksLoads *prometheus.CounterVec
	limits    limitMetrics // rate limits (ratelimit_metrics.go)
	// attache_http_transcode_requests_total{listener,route,method,grpc_status}:
	// transcoded calls by gRPC method and status ("none": no status).
	transcode *prometheus.CounterVec
}

var _ interface {
	protocol.Protocol
	protocol.ALPN
} = (*Protocol)(nil)

// Name is "http".
func (*Protocol) Name() string { return "http" }

// TimesLatency: balance ewma is fed by its listeners.
func (*Protocol) TimesLatency() {}

// Open registers the metrics and reads ATTACHE_HTTP_FAST_PATH (see
// netHTTPOnly).
func (p *Protocol) Open(proc *protocol.Process) error {
	var err error
	if p.netHTTP, err = netHTTPOnly(proc.LookupEnv); err != nil {
		return err
	}
	p.loops = proc.Loops
	r := proc.Metrics.Registry
	p.m = metricSet{
		requests: metrics.Counter(r, "attache_http_requests_total", "HTTP requests by status class.", "listener", "route", "cluster", "code"),
		duration: metrics.Histogram(r, "attache_http_request_duration_seconds", "HTTP request duration, from the request's arrival to the end of the response.",
			0.0005, 2.5, 14, "listener", "route", "cluster"),
		retries:    metrics.Counter(r, "attache_http_retries_total", "HTTP retries sent.", "cluster"),
		overloaded: metrics.Counter(r, "attache_http_overloaded_total", "HTTP requests refused by a circuit-breaking threshold.", "cluster", "reason"),
		breaker:    metrics.Counter(r, "attache_http_breaker_transitions_total", "Circuit breaker state changes.", "cluster", "state"),
		sticky:     metrics.Counter(r, "attache_http_sticky_requests_total", "Requests of sticky splits, by what they were keyed on.", "listener", "route", "key"),
		jwt: metrics.Counter(r, "attache_http_jwt_requests_total", "Requests of routes with a JWT check, by result: allowed, no_token, or the reason of a refusal.",
			"listener", "route", "provider", "result"),
		jwksLoads: metrics.Counter(r, "attache_http_jwt_jwks_loads_total", "Reads and fetches of JWT providers' key sets, by result.", "listener", "provider", "result"),
		limits:    newLimitMetrics(r),
		transcode: metrics.Counter(r, "attache_http_transcode_requests_total", "JSON requests transcoded to gRPC calls, by method and gRPC status.",
			"listener", "route", "method", "grpc_status"),
	}
	return nil
}

// Close does nothing.
func (*Protocol) Close() {}

// ALPN offers HTTP/2 before HTTP/1.1 on TLS listeners.
func (*Protocol) ALPN() []string { return []string{"h2", "http/1.1"} }

var descBreaker = prometheus.NewDesc("attache_http_breaker_state",
	"Circuit breaker state: 0 closed, 1 open, 2 half-open.", []string{"cluster"}, nil)

var descJWKSKeys = prometheus.NewDesc("attache_http_jwt_jwks_keys",
	"Keys a JWT provider's key set holds.", []string{"listener", "provider"}, nil)

// Describe sends the breaker state's, the caches' and the key sets'
// descriptors.
func (*Protocol) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBreaker
	ch <- descCacheLookups
	ch <- descCacheBytes
	ch <- descCacheEntries
	ch <- descJWKSKeys
	describeLimits(ch)
}

// NewCluster builds the cluster's Cluster.
func (p *Protocol) NewCluster(env *protocol.Env) (protocol.Instance, error) {
	c := env.Cluster
	cc := &c.Config
	ho := clusterOptions(cc)
	o := ClusterParams{
		Upstream:       c.Upstream,
		Version:        ho.Version,
		MaxIdle:        ho.MaxIdlePerEndpoint,
		IdleTimeout:    ho.IdleTimeout.D(),
		ConnectTimeout: cc.ConnectTimeout.D(),
		TLS:            c.TLS,
		Credentials:    c.Credentials,
	}
	if k := cc.KubernetesAPI; k != nil {
		o.Filter = NewFilter(*k)
	}
	o.RateLimit = p.m.limits.upstreamLimit(cc.Name, ho.RateLimit)
	if b := ho.CircuitBreaker; b != nil {
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
	var st protocol.Status
	if b := i.c.Breaker(); b != nil {
		st = append(st, protocol.Field{Key: "circuit_breaker", Value: b.State().String()}) // closed | open | half_open
	}
	if u := i.c.opts.RateLimit; u != nil {
		st = append(st, protocol.Field{Key: "rate_limit", Value: u.status()})
	}
	return st
}

func (i *clusterInstance) Collect(ch chan<- prometheus.Metric) {
	if b := i.c.Breaker(); b != nil {
		ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, float64(b.State()), i.c.Name())
	}
	if u := i.c.opts.RateLimit; u != nil {
		collectUpstreamLimit(ch, i.c.Name(), u)
	}
}

// clusterOf returns the Cluster of a generation's cluster.
func clusterOf(c *protocol.Cluster) *Cluster { return c.Instances["http"].(*clusterInstance).c }

// NewListener builds the listener's Handler, and its Server unless prev
// has one on the same address.
func (p *Protocol) NewListener(env *protocol.Env, prev protocol.Listener) (protocol.Listener, error) {
	lc := env.Listener
	i := &instance{addr: lc.Address, name: lc.Name}
	var prevJWT map[string]*jwtProvider
	if old, ok := prev.(*instance); ok {
		prevJWT = old.jwt
	}
	m := p.m
	clusters := func(name string) *Cluster { return clusterOf(env.Clusters(name)) }
	jwt, err := newJWTProviders(lc, prevJWT, clusters, func(listener, provider string, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		if m.jwksLoads != nil {
			m.jwksLoads.WithLabelValues(listener, provider, result).Inc()
		}
	}, env.Log)
	if err != nil {
		return nil, err
	}
	i.jwt = jwt
	for _, pc := range Options(lc).JWTProviders {
		i.jwtNames = append(i.jwtNames, pc.Name)
	}
	if old, ok := prev.(*instance); ok && old.addr == lc.Address {
		i.srv = old.srv
	} else {
		i.srv = NewServer(ServerOptions{IdleTimeout: lc.IdleTimeout.D(), Loops: p.loops, NetHTTP: p.netHTTP, Log: env.Log})
	}
	table := NewTable(*lc, clusters)
	table.bindJWT(lc, jwt)
	carryCaches(table, *lc, prev)
	if old, ok := prev.(*instance); ok {
		carryLimits(table, old.handler.table)
	}
	if err := attachTranscoders(table, lc, p.transcodeCounter()); err != nil {
		return nil, err
	}
	var access *slog.Logger
	switch Options(lc).AccessLog {
	case "json":
		access = slog.New(slog.NewJSONHandler(env.AccessLog, nil))
	case "text":
		access = slog.New(slog.NewTextHandler(env.AccessLog, nil))
	}
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
			JWT: func(listener, route, provider, result string) func() {
				return m.jwt.WithLabelValues(listener, route, provider, result).Inc
			},
			RateLimit: func(listener, route, result string) func() {
				return m.limits.route.WithLabelValues(listener, route, result).Inc
			},
		},
	})
	return i, nil
}

// netHTTPOnly reads the escape hatch ATTACHE_HTTP_FAST_PATH: "off"
// serves every HTTP connection with net/http, should attache's own
// HTTP/1.1 wire code misbehave. Whether the engine or the goroutine fast
// path serves is not its business: that is the process's one switch,
// Process.Loops (ATTACHE_EVENT_LOOPS=off), the same for every protocol.
func netHTTPOnly(lookupEnv func(string) (string, bool)) (bool, error) {
	if lookupEnv == nil {
		return false, nil
	}
	switch v, ok := lookupEnv("ATTACHE_HTTP_FAST_PATH"); {
	case !ok || v == "":
		return false, nil
	case v == "off":
		return true, nil
	case v == "goroutine":
		return false, fmt.Errorf("ATTACHE_HTTP_FAST_PATH=goroutine: no longer read; set ATTACHE_EVENT_LOOPS=off to serve every protocol without event loops")
	default:
		return false, fmt.Errorf("ATTACHE_HTTP_FAST_PATH=%q: want off (net/http serves every connection) or nothing", v)
	}
}

// transcodeCounter is the transcoding metric's recorder; nil before Open.
func (p *Protocol) transcodeCounter() func(listener, route, method, code string) {
	m := p.m.transcode
	if m == nil {
		return nil
	}
	return func(listener, route, method, code string) { m.WithLabelValues(listener, route, method, code).Inc() }
}

// instance is an http listener: its Server and this generation's Handler.
type instance struct {
	addr     string
	name     string
	srv      *Server
	handler  *Handler
	jwt      map[string]*jwtProvider // by name
	jwtNames []string                // in the configuration's order
}

func (i *instance) Handler() listener.Handler { return i.srv }

// Start swaps the generation's routes into the Server.
func (i *instance) Start() {
	startJWT(i.jwt)
	i.srv.Update(i.handler)
}

// Drain asks the Server's clients to go.
func (i *instance) Drain() { i.srv.Drain() }

// Stop closes the Server unless next carries it over; its requests get
// the drain timeout to finish.
func (i *instance) Stop(next protocol.Instance, from, _ *config.Config) {
	var nextJWT map[string]*jwtProvider
	if n, ok := next.(*instance); ok {
		nextJWT = n.jwt
	}
	stopJWT(i.jwt, nextJWT)
	if n, ok := next.(*instance); ok && n.srv == i.srv {
		return
	}
	go i.srv.Close(from.DrainTimeout.D())
}

// Status shows the listener's sticky splits (what they key on, and the
// pod's key, which the environment or the host name may have supplied),
// its routes' token checks and its JWT providers' key sets.
func (i *instance) Status() protocol.Status {
	var st protocol.Status
	var routes []stickyStatus
	var jwtRoutes []jwtStatus
	var grpc []transcodeStatus
	for _, r := range i.handler.table.Routes {
		if r.sticky != nil && len(r.targets) > 1 {
			routes = append(routes, r.sticky.status(r.Name))
		}
		if r.grpc != nil {
			grpc = append(grpc, r.grpc.status(r.Name))
		}
		if j := r.jwt; j != nil {
			jwtRoutes = append(jwtRoutes, jwtStatus{Route: r.Name, Provider: j.prov.cfg.Name, AllowMissing: j.allowMissing})
		}
	}
	if routes != nil {
		st = append(st, protocol.Field{Key: "sticky", Value: routes})
	}
	if caches := i.cacheStatus(); caches != nil {
		st = append(st, protocol.Field{Key: "cache", Value: caches})
	}
	if jwtRoutes != nil {
		provs := make([]jwtauth.Status, 0, len(i.jwt))
		for _, pc := range i.jwtNames {
			provs = append(provs, i.jwt[pc].p.Status())
		}
		st = append(st, protocol.Field{Key: "jwt", Value: jwtRoutes}, protocol.Field{Key: "jwt_providers", Value: provs})
	}
	if grpc != nil {
		st = append(st, protocol.Field{Key: "grpc_transcode", Value: grpc})
	}
	if limits := limitStatus(i.handler.table); limits != nil {
		st = append(st, protocol.Field{Key: "rate_limits", Value: limits})
	}
	return st
}

// Collect sends the metrics of the route caches, the rate limits and the
// keys each JWT provider holds.
func (i *instance) Collect(ch chan<- prometheus.Metric) {
	i.collectCaches(ch)
	collectRouteLimits(ch, i.handler.table)
	for name, p := range i.jwt {
		ch <- prometheus.MustNewConstMetric(descJWKSKeys, prometheus.GaugeValue, float64(p.p.Keys()), i.name, name)
	}
}
