package httpproxy

import (
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// ClusterOptions are clusters[].http: how attache speaks HTTP to a
// cluster, for every http listener that uses it. circuit_breaker and
// rate_limit were once the cluster's own keys; they are still accepted
// there (Aliases).
type ClusterOptions struct {
	Version            string          `yaml:"version"` // auto | 1.1 | 2 | h2c
	MaxIdlePerEndpoint int             `yaml:"max_idle_per_endpoint"`
	IdleTimeout        config.Duration `yaml:"idle_timeout"`
	CircuitBreaker     *CircuitBreaker `yaml:"circuit_breaker"`
	// RateLimit limits what attache sends the cluster; nil: none.
	RateLimit *UpstreamRateLimit `yaml:"rate_limit"`
}

// CircuitBreaker limits what a cluster is sent (Envoy-style thresholds) and
// stops sending for a while after consecutive failures (classic breaker).
type CircuitBreaker struct {
	MaxConnections      int             `yaml:"max_connections"`
	MaxPending          int             `yaml:"max_pending"`
	MaxRequests         int             `yaml:"max_requests"`
	MaxRetries          int             `yaml:"max_retries"`
	ConsecutiveFailures int             `yaml:"consecutive_failures"` // 0: no classic breaker
	OpenFor             config.Duration `yaml:"open_for"`
}

// UpstreamRateLimit is a cluster's limit on what attache sends it, over
// every route and listener: a token bucket, with a queue where requests
// wait briefly for a token.
type UpstreamRateLimit struct {
	Requests int             `yaml:"requests"`
	Per      config.Duration `yaml:"per"`
	Burst    int             `yaml:"burst"`
	// Queue lets requests wait for a token; nil: refused at once.
	Queue *RateLimitQueue `yaml:"queue"`
}

// RateLimitQueue bounds the requests waiting for a token of an upstream
// rate limit: at most Max at once, each at most Timeout.
type RateLimitQueue struct {
	Max     int             `yaml:"max"`
	Timeout config.Duration `yaml:"timeout"`
}

// Defaults of clusters[].http.
const (
	DefaultMaxIdlePerEndpoint = 64
	DefaultHTTPIdleTimeout    = 90 * time.Second
	DefaultRateLimitPer       = time.Second
	DefaultRateLimitQueue     = 100
	DefaultRateLimitWait      = time.Second
)

// HTTPVersions are the versions clusters[].http.version accepts.
var HTTPVersions = []string{"auto", "1.1", "2", "h2c"}

// ClusterOptions returns a new clusters[].http.
func (*Protocol) ClusterOptions() any { return &ClusterOptions{} }

// clusterAliases are the keys of clusters[].http that were the cluster's own.
func clusterAliases(m map[string]string) {
	for _, k := range []string{"circuit_breaker", "rate_limit"} {
		m["clusters[]."+k] = "clusters[].http." + k
	}
}

// clusterOptions are the http options of a cluster (filled in by
// config.Parse for a cluster an http listener uses); the defaults for
// another.
func clusterOptions(cl *config.Cluster) *ClusterOptions {
	if o, ok := cl.Options["http"].(*ClusterOptions); ok {
		return o
	}
	o := &ClusterOptions{}
	o.defaults()
	return o
}

func (o *ClusterOptions) defaults() {
	if o.Version == "" {
		o.Version = "auto"
	}
	if o.MaxIdlePerEndpoint == 0 {
		o.MaxIdlePerEndpoint = DefaultMaxIdlePerEndpoint
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = config.Duration(DefaultHTTPIdleTimeout)
	}
}

// Default fills in the defaults of the pool, the breaker and the rate limit.
func (o *ClusterOptions) Default(*config.Check) {
	o.defaults()
	if b := o.CircuitBreaker; b != nil {
		if b.MaxConnections == 0 {
			b.MaxConnections = 1024
		}
		if b.MaxPending == 0 {
			b.MaxPending = 1024
		}
		if b.MaxRequests == 0 {
			b.MaxRequests = 1024
		}
		if b.MaxRetries == 0 {
			b.MaxRetries = 3
		}
		if b.OpenFor == 0 {
			b.OpenFor = config.Duration(30 * time.Second)
		}
	}
	if rl := o.RateLimit; rl != nil {
		fillBucket(&rl.Per, &rl.Burst, rl.Requests)
		if q := rl.Queue; q != nil {
			if q.Max == 0 {
				q.Max = DefaultRateLimitQueue
			}
			if q.Timeout == 0 {
				q.Timeout = config.Duration(DefaultRateLimitWait)
			}
		}
	}
}

// fillBucket sets per and burst of a token bucket to their defaults: a
// second, and the requests of one period.
func fillBucket(per *config.Duration, burst *int, requests int) {
	if *per == 0 {
		*per = config.Duration(DefaultRateLimitPer)
	}
	if *burst == 0 {
		*burst = requests
	}
}

// Validate checks the options, and refuses those set on a cluster that
// no http listener uses.
func (o *ClusterOptions) Validate(c *config.Check) {
	p := c.Path
	cl := c.Cluster
	if len(c.UsedBy) > 0 && !c.UsedBy["http"] {
		used := config.ProtocolList(c.UsedBy)
		def := ClusterOptions{}
		def.defaults()
		if o.Version != def.Version || o.MaxIdlePerEndpoint != def.MaxIdlePerEndpoint || o.IdleTimeout != def.IdleTimeout {
			c.Errorf(p, "not used by %s listeners (it is how HTTP requests are sent)", used)
		}
		if o.CircuitBreaker != nil {
			c.Errorf(p+".circuit_breaker", "not used by %s listeners (its limits count HTTP requests and connections of the HTTP pool)", used)
		}
		if o.RateLimit != nil {
			c.Errorf(p+".rate_limit", "not used by %s listeners (it limits the HTTP requests sent to the cluster)", used)
		}
	}
	if o.RateLimit != nil && c.UsedBy["http"] && len(c.UsedBy) > 1 {
		others := map[string]bool{}
		for k := range c.UsedBy {
			if k != "http" {
				others[k] = true
			}
		}
		c.Errorf(p+".rate_limit", "not honoured by %s listeners (only HTTP requests are counted); give them a cluster of their own", config.ProtocolList(others))
	}
	c.OneOf(p+".version", "HTTP version", o.Version, HTTPVersions)
	if o.MaxIdlePerEndpoint < 1 {
		c.Errorf(p+".max_idle_per_endpoint", "must be at least 1")
	}
	if o.IdleTimeout <= 0 {
		c.Errorf(p+".idle_timeout", "must be positive")
	}
	if o.Version == "2" && cl.TLS == nil {
		c.Errorf(p+".version", `"2" needs tls (HTTP/2 over TLS); use "h2c" for cleartext HTTP/2`)
	}
	if o.Version == "h2c" && cl.TLS != nil && cl.KubernetesAPI == nil && c.UsedBy["http"] {
		c.Errorf(p+".version", `"h2c" is cleartext HTTP/2 and the cluster has tls; use "2" for HTTP/2 over TLS`)
	}
	if rl := o.RateLimit; rl != nil {
		validateUpstreamRateLimit(c, p+".rate_limit", rl)
	}
	if b := o.CircuitBreaker; b != nil {
		bp := p + ".circuit_breaker"
		for _, f := range []struct {
			name string
			n    int
		}{{"max_connections", b.MaxConnections}, {"max_pending", b.MaxPending}, {"max_requests", b.MaxRequests}, {"max_retries", b.MaxRetries}} {
			if f.n < 0 {
				c.Errorf(bp+"."+f.name, "must not be negative")
			}
		}
		if b.ConsecutiveFailures < 0 {
			c.Errorf(bp+".consecutive_failures", "must not be negative")
		}
		if b.OpenFor <= 0 {
			c.Errorf(bp+".open_for", "must be positive")
		}
	}
}

// bucket validates the bucket of a rate limit at path p.
func validateBucket(c *config.Check, p string, requests int, per config.Duration, burst int) {
	if requests < 1 {
		c.Errorf(p+".requests", "must be positive (requests allowed each per)")
	}
	if per.D() < time.Second || per.D()%time.Second != 0 {
		c.Errorf(p+".per", "%s: must be a whole number of seconds (1s, 1m, 1h); for 10 per 100ms write requests: 100, per: 1s, burst: 10", per.D())
	}
	if burst < 1 && (requests >= 1 || burst != requests) { // (a burst left out is requests)
		c.Errorf(p+".burst", "must be positive (requests allowed at once)")
	}
}

// upstreamRateLimit validates a cluster's rate_limit at path p.
func validateUpstreamRateLimit(c *config.Check, p string, rl *UpstreamRateLimit) {
	validateBucket(c, p, rl.Requests, rl.Per, rl.Burst)
	if q := rl.Queue; q != nil {
		if q.Max < 1 {
			c.Errorf(p+".queue.max", "must be positive (leave queue out to refuse at once)")
		}
		if q.Timeout <= 0 {
			c.Errorf(p+".queue.timeout", "must be positive")
		}
	}
}
