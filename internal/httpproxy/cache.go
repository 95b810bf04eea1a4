package httpproxy

import (
	"net/http"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/httpcache"
	"github.com/attache-proxy/attache/internal/protocol"
)

// newRouteCache builds a route's response cache.
func newRouteCache(rc *RouteCache) *httpcache.Cache {
	return httpcache.New(httpcache.Config{
		MaxBytes:             int64(rc.MaxBytes),
		MaxObjectBytes:       int64(rc.MaxObjectBytes),
		DefaultTTL:           rc.DefaultTTL.D(),
		StaleIfError:         rc.StaleIfError.D(),
		StaleWhileRevalidate: rc.StaleWhileRevalidate.D(),
		CoalesceTimeout:      rc.CoalesceTimeout.D(),
		CacheAuthorized:      rc.CacheAuthorized,
		CacheSetCookie:       rc.CacheSetCookie,
		CredentialHeaders:    rc.CredentialHeaders,
		// Per exchange: a stored response answers without an attempt.
		DropHeaders: []string{"X-Attache-Attempts"},
	}, nil)
}

// serveCached answers a request for a cached route from its cache, which
// sends what it cannot answer upstream through forward: the request's own
// call with x, a background revalidation with an exchange of its own
// (neither metrics nor the access log see it; its panic on a cut
// response is the cache's to recover).
func (h *Handler) serveCached(rw *statusWriter, r *http.Request, x *exchange) {
	res := x.route.cache.Serve(rw, r, x.cluster.Name(), func(w http.ResponseWriter, out *http.Request, background bool) {
		if background {
			h.forward(w, out, &exchange{route: x.route, cluster: x.cluster, key: x.key, hostFrom: x.hostFrom})
			return
		}
		h.forward(w, out, x)
	})
	// Answered from the cache: the access log's reason says so (after a
	// failed call, with why it failed).
	switch res {
	case httpcache.Hit, httpcache.Coalesced, httpcache.Revalidated:
		x.reason = "cache " + res.String()
	case httpcache.Stale:
		if x.reason != "" {
			x.reason = "cache stale: " + x.reason
		} else {
			x.reason = "cache stale"
		}
	}
}

// carryCaches gives the routes of t the caches of prev's routes of the
// same name and cache configuration, so that a reload that leaves a
// route's cache alone keeps what it stored.
func carryCaches(t *Table, cfg config.Listener, prev protocol.Listener) {
	old, ok := prev.(*instance)
	if !ok || old.handler == nil {
		return
	}
	for i, r := range t.Routes {
		if r.cache == nil {
			continue
		}
		for _, o := range old.handler.table.Routes {
			if o.cache != nil && o.Name == r.Name && reflect.DeepEqual(o.cacheCfg, Options(&cfg).Routes[i].Cache) {
				r.cache = o.cache
				break
			}
		}
	}
}

var (
	descCacheLookups = prometheus.NewDesc("attache_http_cache_lookups_total",
		"Requests to cached routes by what the cache did: hit, miss, stale, revalidated, uncacheable, coalesced.",
		[]string{"listener", "route", "result"}, nil)
	descCacheBytes = prometheus.NewDesc("attache_http_cache_bytes",
		"Bytes a route's response cache holds (bodies, fields and bookkeeping).", []string{"listener", "route"}, nil)
	descCacheEntries = prometheus.NewDesc("attache_http_cache_entries",
		"Responses a route's cache holds.", []string{"listener", "route"}, nil)
)

// collectCaches sends the metrics of the listener's route caches.
func (i *instance) collectCaches(ch chan<- prometheus.Metric) {
	l := i.handler.listener
	for _, r := range i.handler.table.Routes {
		if r.cache == nil {
			continue
		}
		s := r.cache.Stats()
		for res, n := range s.Lookups {
			ch <- prometheus.MustNewConstMetric(descCacheLookups, prometheus.CounterValue, float64(n), l, r.Name, httpcache.Results[res])
		}
		ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(s.Bytes), l, r.Name)
		ch <- prometheus.MustNewConstMetric(descCacheEntries, prometheus.GaugeValue, float64(s.Entries), l, r.Name)
	}
}

// cacheStatus is a route's cache in a listener's /status.
type cacheStatus struct {
	Route    string `json:"route"`
	Hits     uint64 `json:"hits"` // fresh, stale, revalidated and coalesced answers
	Misses   uint64 `json:"misses"`
	Bypassed uint64 `json:"uncacheable"`
	Bytes    int64  `json:"bytes"`
	MaxBytes int64  `json:"max_bytes"`
	Entries  int    `json:"entries"`
}

func (i *instance) cacheStatus() []cacheStatus {
	var out []cacheStatus
	for _, r := range i.handler.table.Routes {
		if r.cache == nil {
			continue
		}
		s := r.cache.Stats()
		l := s.Lookups
		out = append(out, cacheStatus{Route: r.Name, Hits: l[httpcache.Hit] + l[httpcache.Stale] + l[httpcache.Revalidated] + l[httpcache.Coalesced],
			Misses: l[httpcache.Miss], Bypassed: l[httpcache.Uncacheable], Bytes: s.Bytes, MaxBytes: int64(r.cacheCfg.MaxBytes), Entries: s.Entries})
	}
	return out
}
