package app

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/discovery"
	kubediscovery "github.com/attache-proxy/attache/internal/discovery/kubernetes"
)

// discoveryState is what a cluster's discovery source said last, for
// /ready, /status and metrics. Its methods may be called concurrently.
type discoveryState struct {
	source string // dns | kubernetes | consul | file

	mu     sync.Mutex
	err    error     // of the latest attempt; nil after a success
	since  time.Time // first failure of the current run of failures
	lastOK time.Time
}

func (s *discoveryState) report(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	switch {
	case err == nil:
		s.err, s.since, s.lastOK = nil, time.Time{}, now
	case s.err == nil:
		s.err, s.since = err, now
	default:
		s.err = err
	}
}

// failing returns the latest error and since when the source has failed;
// nil when its latest attempt worked.
func (s *discoveryState) failing() (error, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err, s.since
}

func (s *discoveryState) status() *DiscoveryStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	ds := &DiscoveryStatus{Source: s.source, Stale: s.err != nil}
	if s.err != nil {
		ds.Error = s.err.Error()
		since := s.since
		ds.FailingSince = &since
	}
	if !s.lastOK.IsZero() {
		ok := s.lastOK
		ds.LastSuccess = &ok
	}
	return ds
}

// note is the /ready line of a failing source, or "".
func (s *discoveryState) note(cluster string, endpoints int) string {
	err, since := s.failing()
	if err == nil {
		return ""
	}
	what := "no endpoints yet"
	if endpoints > 0 {
		what = fmt.Sprintf("serving the %d last known endpoints", endpoints)
	}
	return fmt.Sprintf("cluster %q: %s discovery failing since %s (%v); %s", cluster, s.source, since.UTC().Format(time.RFC3339), err, what)
}

// discoverySource returns the source of a cluster with discovery (nil for a
// static list) and its state. Endpoints known now are put in place at once:
// a file is read here. (A cluster rebuilt by a reload serves the previous
// generation's endpoints until its source reports: upstream.Cluster.Inherit.)
func (a *App) discoverySource(cc config.Cluster, rt *clusterRT, old *generation) (discovery.Discoverer, error) {
	d := cc.Discovery
	if d == nil {
		return nil, nil
	}
	log := a.log.With("cluster", cc.Name)
	st := &discoveryState{}
	rt.disc = st
	var src discovery.Discoverer
	switch {
	case d.DNS != nil:
		st.source = "dns"
		src = &discovery.DNS{Name: d.DNS.Name, Port: d.DNS.Port, SRV: d.DNS.SRV, Refresh: d.DNS.Refresh.D(),
			Resolver: net.DefaultResolver, Log: log, Report: a.discoveryReport(cc.Name, st)}
	case d.Consul != nil:
		st.source = "consul"
		c := d.Consul
		client, err := discovery.NewConsulClient(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("discovery.consul.ca_file: %w", err)
		}
		src = &discovery.Consul{Address: c.Address, Scheme: c.Scheme, Service: c.Service, Tag: c.Tag, Datacenter: c.Datacenter,
			Token: c.Token, Client: client, Log: log, Report: a.discoveryReport(cc.Name, st)}
	case d.Kubernetes != nil:
		st.source = "kubernetes"
		k := d.Kubernetes
		client, err := kubediscovery.NewClient(k.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("discovery.kubernetes: %w", err)
		}
		src = &kubediscovery.EndpointSlices{ListWatch: kubediscovery.Scoped(client, k.Namespace, k.Service),
			Namespace: k.Namespace, Service: k.Service, Port: k.Port, Log: log, Report: a.discoveryReport(cc.Name, st)}
	case d.File != nil:
		st.source = "file"
		if ts, err := discovery.ReadFile(d.File.Path); err == nil {
			rt.up.SetEndpoints(ts)
		}
		src = &discovery.File{Path: d.File.Path, Poll: a.opts.ConfigPoll, Log: log, Report: a.discoveryReport(cc.Name, st)}
	}
	return src, nil
}

func (a *App) discoveryReport(cluster string, st *discoveryState) func(error) {
	errs := a.metrics.DiscoveryErrors.WithLabelValues(cluster, st.source)
	return func(err error) {
		st.report(err)
		if err != nil {
			errs.Inc()
		}
	}
}
