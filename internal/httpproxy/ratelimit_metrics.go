package httpproxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/metrics"
	"github.com/attache-proxy/attache/internal/ratelimit"
)

// limitMetrics are the rate limits' metrics.
type limitMetrics struct {
	// attache_http_ratelimit_requests_total{listener,route,result}:
	// "allowed" or "limited" (answered 429).
	route *prometheus.CounterVec
	// attache_http_ratelimit_upstream_requests_total{cluster,result}:
	// "allowed" (a token at once), "queued" (a token after a wait),
	// "limited" (429) or "cancelled" (the client went away while queued).
	upstream *prometheus.CounterVec
	// attache_http_ratelimit_upstream_wait_seconds{cluster}: the waits of
	// queued requests that got their token.
	wait *prometheus.HistogramVec
}

func newLimitMetrics(r *prometheus.Registry) limitMetrics {
	return limitMetrics{
		route: metrics.Counter(r, "attache_http_ratelimit_requests_total", "Requests of rate-limited routes, by decision.", "listener", "route", "result"),
		upstream: metrics.Counter(r, "attache_http_ratelimit_upstream_requests_total",
			"Requests to rate-limited clusters, by decision.", "cluster", "result"),
		wait: metrics.Histogram(r, "attache_http_ratelimit_upstream_wait_seconds",
			"How long queued requests waited for a token of their cluster's rate limit.", 0.001, 2, 14, "cluster"),
	}
}

// Scrape-time metrics, read from the limiters.
var (
	descLimitKeys = prometheus.NewDesc("attache_http_ratelimit_keys",
		"Keys with a bucket of their own in a keyed route rate limit.", []string{"listener", "route"}, nil)
	descLimitEvictions = prometheus.NewDesc("attache_http_ratelimit_key_evictions_total",
		"Keys forgotten to keep a route rate limit within max_keys.", []string{"listener", "route"}, nil)
	descLimitQueue = prometheus.NewDesc("attache_http_ratelimit_upstream_queue_depth",
		"Requests waiting for a token of their cluster's rate limit.", []string{"cluster"}, nil)
)

func describeLimits(ch chan<- *prometheus.Desc) {
	ch <- descLimitKeys
	ch <- descLimitEvictions
	ch <- descLimitQueue
}

// upstreamLimit builds a cluster's UpstreamLimit with its metrics; nil for
// none.
func (m limitMetrics) upstreamLimit(cluster string, rl *UpstreamRateLimit) *UpstreamLimit {
	if rl == nil {
		return nil
	}
	maxQueue, maxWait := 0, time.Duration(0)
	if q := rl.Queue; q != nil {
		maxQueue, maxWait = q.Max, q.Timeout.D()
	}
	u := &UpstreamLimit{Queue: ratelimit.NewQueue(ratelimit.PolicyOf(rl.Requests, rl.Per.D(), rl.Burst), maxQueue, maxWait), Config: *rl}
	if m.upstream != nil {
		u.Allowed = m.upstream.WithLabelValues(cluster, "allowed").Inc
		u.Queued = m.upstream.WithLabelValues(cluster, "queued").Inc
		u.Limited = m.upstream.WithLabelValues(cluster, "limited").Inc
		u.Cancelled = m.upstream.WithLabelValues(cluster, "cancelled").Inc
		h := m.wait.WithLabelValues(cluster)
		u.Waited = func(d time.Duration) { h.Observe(d.Seconds()) }
	}
	return u
}

func collectUpstreamLimit(ch chan<- prometheus.Metric, cluster string, u *UpstreamLimit) {
	ch <- prometheus.MustNewConstMetric(descLimitQueue, prometheus.GaugeValue, float64(u.Queue.Waiting()), cluster)
}

func collectRouteLimits(ch chan<- prometheus.Metric, t *Table) {
	for _, r := range t.Routes {
		if l := r.limit; l != nil && l.by != limitNone {
			ch <- prometheus.MustNewConstMetric(descLimitKeys, prometheus.GaugeValue, float64(l.l.Keys()), t.Listener, r.Name)
			ch <- prometheus.MustNewConstMetric(descLimitEvictions, prometheus.CounterValue, float64(l.l.Evictions()), t.Listener, r.Name)
		}
	}
}

// limitStatus is the rate limits of a listener's routes for /status; nil
// when there are none.
func limitStatus(t *Table) []rateLimitStatus {
	var out []rateLimitStatus
	for _, r := range t.Routes {
		if r.limit != nil {
			out = append(out, r.limit.status(r.Name))
		}
	}
	return out
}
