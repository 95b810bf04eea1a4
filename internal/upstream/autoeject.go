package upstream

import "time"

// FailurePolicy is twemproxy's auto_eject_hosts as a policy on a cluster's
// endpoints, for a protocol that keeps its own connections to every
// endpoint (Redis shards): Limit consecutive failures (server_failure_limit)
// eject the endpoint for RetryTimeout (server_retry_timeout), always the
// same time, with no max_ejection_percent: every endpoint may go, as in
// nutcracker. The ejection is the one outlier detection makes, so /status,
// the ejection metrics and a passing active check (which ends it) treat it
// alike.
type FailurePolicy struct {
	Limit        int
	RetryTimeout time.Duration
}

// RecordFailure counts one failure of e under p (a connection refused,
// closed or timed out: what nutcracker's server_failure counts) and ejects
// e when the count reaches p.Limit. It reports whether this failure
// ejected e. A failure of an endpoint already ejected counts nothing: its
// connections are failing their last requests.
func (c *Cluster) RecordFailure(e *Endpoint, p FailurePolicy, err error) (ejected bool) {
	if e.failures.Add(1) < int32(p.Limit) {
		return false
	}
	now := c.opts.Now()
	e.mu.Lock()
	e.failures.Store(0)
	if e.Ejected(now) {
		e.mu.Unlock()
		return false
	}
	e.ejectedUntil.Store(now.Add(p.RetryTimeout).UnixNano())
	e.mu.Unlock()
	e.changed()
	c.opts.Log.Warn("endpoint ejected after consecutive failures", "cluster", c.opts.Name, "endpoint", e.Addr,
		"error", err, "retry_in", p.RetryTimeout)
	if c.opts.Observer.Ejected != nil {
		c.opts.Observer.Ejected(e)
	}
	return true
}

// RecordSuccess ends e's run of failures under a FailurePolicy (any reply:
// nutcracker's server_ok). It is one atomic load while there is none, so
// that it may run for every reply.
func (e *Endpoint) RecordSuccess() {
	if e.failures.Load() != 0 {
		e.failures.Store(0)
	}
}
