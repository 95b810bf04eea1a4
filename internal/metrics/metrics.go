// Package metrics defines attache's Prometheus metrics. Every metric is
// registered on the registry passed to New; there are no package globals.
//
// Names follow attache_<subsystem>_<name>_<unit>. Endpoint health and
// ejection are not stored here: they are read from the live endpoint state
// at scrape time (see app.collector), so a removed endpoint leaves no stale
// series behind. A protocol's own metrics (attache_http_*, attache_redis_*,
// attache_postgres_*) are its package's, registered when it opens on the
// registry here (see internal/protocol).
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the process's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	// attache_listener_connections_active{listener}
	ConnectionsActive *prometheus.GaugeVec
	// attache_listener_connections_total{listener}
	ConnectionsTotal *prometheus.CounterVec
	// attache_listener_connections_rejected_total{listener,reason}
	ConnectionsRejected *prometheus.CounterVec
	// attache_listener_tls_handshake_errors_total{listener}
	HandshakeErrors *prometheus.CounterVec
	// attache_cluster_bytes_total{cluster,direction}: direction is
	// "to_upstream" or "from_upstream".
	Bytes *prometheus.CounterVec
	// attache_cluster_connect_errors_total{cluster,endpoint}
	ConnectErrors *prometheus.CounterVec
	// attache_cluster_endpoint_ejections_total{cluster,endpoint}
	Ejections *prometheus.CounterVec
	// attache_cluster_health_transitions_total{cluster,endpoint,health}
	HealthTransitions *prometheus.CounterVec
	// attache_cluster_primary_changes_total{cluster}
	PrimaryChanges *prometheus.CounterVec
	// attache_cluster_failover_hooks_total{cluster,result}: "success" or "failure".
	FailoverHooks *prometheus.CounterVec
	// attache_config_last_reload_successful: 1 if the last load worked.
	ReloadSuccessful prometheus.Gauge
	// attache_config_last_reload_success_timestamp_seconds
	ReloadTimestamp prometheus.Gauge
	// attache_config_reloads_total{result}: "success" or "failure".
	Reloads *prometheus.CounterVec
	// attache_tls_reload_errors_total{owner}: a rotated certificate, key or
	// CA that failed to load (the previous one stays in use).
	TLSReloadErrors *prometheus.CounterVec
	// attache_tls_peer_rejections_total{owner}: peer certificates that
	// chained to the CA but presented none of the names of match_san.
	PeerRejections *prometheus.CounterVec
	// attache_credential_reload_errors_total{cluster}: a token or password
	// file that changed but could not be used (its last value stays).
	CredentialReloadErrors *prometheus.CounterVec
	// attache_discovery_errors_total{cluster,source}: failed reads of a
	// discovery source (dns, kubernetes, consul, file); the last known endpoints stay.
	DiscoveryErrors *prometheus.CounterVec
	// attache_discovery_updates_total{cluster,source}: endpoint sets a
	// discovery source reported (the first one included).
	DiscoveryUpdates *prometheus.CounterVec
	// attache_draining: 1 after SIGTERM, while connections drain.
	Draining prometheus.Gauge
}

// New creates the metrics on a new registry, with Go runtime and process
// collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := factory{r}
	m := &Metrics{
		Registry:            r,
		ConnectionsActive:   f.gauge("attache_listener_connections_active", "Connections open on a listener.", "listener"),
		ConnectionsTotal:    f.counter("attache_listener_connections_total", "Connections accepted on a listener.", "listener"),
		ConnectionsRejected: f.counter("attache_listener_connections_rejected_total", "Connections refused by a listener, by reason.", "listener", "reason"),
		HandshakeErrors:     f.counter("attache_listener_tls_handshake_errors_total", "Client TLS handshakes that failed.", "listener"),
		Bytes:               f.counter("attache_cluster_bytes_total", "Bytes proxied to and from a cluster's endpoints.", "cluster", "direction"),
		ConnectErrors:       f.counter("attache_cluster_connect_errors_total", "Failed connection attempts to an endpoint (including TLS handshakes).", "cluster", "endpoint"),
		Ejections:           f.counter("attache_cluster_endpoint_ejections_total", "Endpoints ejected by outlier detection.", "cluster", "endpoint"),
		HealthTransitions:   f.counter("attache_cluster_health_transitions_total", "Endpoint health changes found by active checks.", "cluster", "endpoint", "health"),
		PrimaryChanges:      f.counter("attache_cluster_primary_changes_total", "Another endpoint became the one primary of a cluster (postgres checks).", "cluster"),
		FailoverHooks:       f.counter("attache_cluster_failover_hooks_total", "on_failover runs, by result.", "cluster", "result"),
		Reloads:             f.counter("attache_config_reloads_total", "Configuration loads, by result.", "result"),
		TLSReloadErrors:     f.counter("attache_tls_reload_errors_total", "Rotated TLS files that failed to load; the previous ones stay in use.", "owner"),
		PeerRejections:      f.counter("attache_tls_peer_rejections_total", "TLS handshakes refused because the peer's certificate presented none of the names of match_san.", "owner"),
		DiscoveryErrors:     f.counter("attache_discovery_errors_total", "Failed reads of a discovery source; the last known endpoints stay in use.", "cluster", "source"),
		DiscoveryUpdates:    f.counter("attache_discovery_updates_total", "Endpoint sets reported by a discovery source.", "cluster", "source"),
	}
	m.CredentialReloadErrors = f.counter("attache_credential_reload_errors_total",
		"Token or password files that changed but could not be used; the last value stays in use.", "cluster")
	m.ReloadSuccessful = prometheus.NewGauge(prometheus.GaugeOpts{Name: "attache_config_last_reload_successful", Help: "Whether the last configuration load succeeded."})
	m.ReloadTimestamp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "attache_config_last_reload_success_timestamp_seconds", Help: "When the configuration was last loaded successfully."})
	m.Draining = prometheus.NewGauge(prometheus.GaugeOpts{Name: "attache_draining", Help: "1 while attache drains connections before exiting."})
	r.MustRegister(m.ReloadSuccessful, m.ReloadTimestamp, m.Draining,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type factory struct{ r *prometheus.Registry }

// Counter registers a counter vector on r: for protocols, which register
// their own metrics when they open (internal/protocol).
func Counter(r *prometheus.Registry, name, help string, labels ...string) *prometheus.CounterVec {
	return factory{r}.counter(name, help, labels...)
}

// Histogram registers a histogram vector on r with exponential buckets.
func Histogram(r *prometheus.Registry, name, help string, start, factor float64, count int, labels ...string) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: prometheus.ExponentialBuckets(start, factor, count)}, labels)
	r.MustRegister(v)
	return v
}

func (f factory) counter(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(v)
	return v
}

func (f factory) gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(v)
	return v
}
