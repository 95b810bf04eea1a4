package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/credentials"
	"github.com/attache-proxy/attache/internal/failover"
	"github.com/attache-proxy/attache/internal/health"
	"github.com/attache-proxy/attache/internal/listener"
	"github.com/attache-proxy/attache/internal/protocol"
	"github.com/attache-proxy/attache/internal/tlsconfig"
	"github.com/attache-proxy/attache/internal/upstream"
	"github.com/attache-proxy/attache/internal/watch"
)

// tlsPoll is how often rotated TLS files are compared when inotify misses a
// change.
const tlsPoll = 10 * time.Second

// generation is one applied configuration and what was built from it. A
// cluster or listener TLS whose configuration did not change is carried
// into the next generation as the same object, with its state and its
// background tasks.
type generation struct {
	cfg       *config.Config
	loadedAt  time.Time
	clusters  map[string]*clusterRT
	listeners map[string]*listenerRT
}

type clusterRT struct {
	cfg    config.Cluster
	up     *upstream.Cluster
	proto  *protocol.Cluster // what protocols see, with their instances of the cluster
	roles  bool              // the health check learns endpoint roles (postgres)
	tls    *tlsconfig.Client
	watch  *failover.Watcher // clusters with a postgres check
	creds  *credentials.Set  // nil: none
	disc   *discoveryState   // clusters with discovery only
	names  *resolveState     // static clusters of host names without a health check only
	cancel context.CancelFunc
}

type listenerRT struct {
	cfg    config.Listener
	tls    *tlsconfig.Server
	cancel context.CancelFunc // the TLS file watch
	inst   protocol.Listener  // built by the listener's protocol
}

// apply builds a generation from cfg and swaps it in. On error nothing
// changes.
func (a *App) apply(cfg *config.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.gen.Load()
	next := &generation{cfg: cfg, loadedAt: time.Now(), clusters: map[string]*clusterRT{}, listeners: map[string]*listenerRT{}}
	var built []func() // starts the background tasks of what is new
	fail := func(err error) error {
		next.stop(old)
		return err
	}

	for _, cc := range cfg.Clusters {
		if old != nil {
			if prev := old.clusters[cc.Name]; prev != nil && reflect.DeepEqual(prev.cfg, cc) {
				next.clusters[cc.Name] = prev
				continue
			}
		}
		rt, start, err := a.buildCluster(cc, old, next)
		if err != nil {
			return fail(fmt.Errorf("cluster %q: %w", cc.Name, err))
		}
		next.clusters[cc.Name] = rt
		built = append(built, start)
	}

	settings := map[string]listener.Settings{}
	for _, lc := range cfg.Listeners {
		rt := &listenerRT{cfg: lc}
		proto := a.protocol[lc.Protocol]
		var prevInst protocol.Listener
		if old != nil {
			prev := old.listeners[lc.Name]
			if prev != nil && reflect.DeepEqual(prev.cfg.TLS, lc.TLS) && prev.cfg.Protocol == lc.Protocol {
				rt.tls, rt.cancel = prev.tls, prev.cancel
			}
			if prev != nil && prev.cfg.Protocol == lc.Protocol {
				prevInst = prev.inst
			}
		}
		env := a.env(next)
		env.Cluster = next.cluster(lc.Cluster)
		env.Listener = &lc
		env.Log = a.log.With("listener", lc.Name)
		inst, err := proto.NewListener(env, prevInst)
		if err != nil {
			return fail(fmt.Errorf("listener %q: %w", lc.Name, err))
		}
		rt.inst = inst
		next.listeners[lc.Name] = rt // stopped with next if what follows fails
		if lc.TLS != nil && rt.tls == nil {
			var alpn []string
			if p, ok := proto.(protocol.ALPN); ok {
				alpn = p.ALPN()
			}
			s, err := tlsconfig.NewServer(*lc.TLS, alpn...)
			if err != nil {
				return fail(fmt.Errorf("listener %q: %w", lc.Name, err))
			}
			rt.tls = s
			ctx, cancel := context.WithCancel(context.Background())
			rt.cancel = cancel
			owner := "listener " + lc.Name
			s.OnReject = a.peerRejected(owner)
			built = append(built, func() { go a.watchTLS(ctx, owner, s.Files(), s.Reload) })
		}
		settings[lc.Address] = a.listenerSettings(lc, rt)
	}

	if err := a.pool.Apply(settings); err != nil {
		return fail(err)
	}
	for _, lc := range cfg.Listeners {
		next.listeners[lc.Name].inst.Start()
	}
	a.applyZone(cfg)
	a.gen.Store(next)
	for _, start := range built {
		start()
	}
	if old != nil {
		old.stop(next)
	}
	return nil
}

// env is the environment of what is built for next: the cluster or
// listener fields are the caller's to fill.
func (a *App) env(next *generation) *protocol.Env {
	return &protocol.Env{Process: a.proc, Config: next.cfg, Clusters: next.cluster, Log: a.log}
}

// cluster returns the protocols' view of the cluster named name, or nil.
func (g *generation) cluster(name string) *protocol.Cluster {
	if c := g.clusters[name]; c != nil {
		return c.proto
	}
	return nil
}

// stop ends the background tasks of everything in g that keep does not
// carry on. keep may be nil.
func (g *generation) stop(keep *generation) {
	var to *config.Config
	if keep != nil {
		to = keep.cfg
	}
	for name, c := range g.clusters {
		if keep != nil && keep.clusters[name] == c {
			continue
		}
		if c.cancel != nil {
			c.cancel()
		}
	}
	for name, c := range g.clusters {
		if keep != nil && keep.clusters[name] == c {
			continue
		}
		var successor *protocol.Cluster
		if keep != nil {
			successor = keep.cluster(name)
		}
		for proto, inst := range c.proto.Instances {
			var next protocol.Instance
			if successor != nil {
				next = successor.Instances[proto]
			}
			inst.Stop(next, g.cfg, to)
		}
	}
	for name, l := range g.listeners {
		kept := keep != nil && keep.listeners[name] != nil
		var next protocol.Instance
		if kept && keep.listeners[name].inst != nil {
			next = keep.listeners[name].inst
		}
		l.inst.Stop(next, g.cfg, to)
		if kept && keep.listeners[name].tls == l.tls {
			continue
		}
		if l.cancel != nil {
			l.cancel()
		}
	}
}

func (a *App) buildCluster(cc config.Cluster, old, next *generation) (*clusterRT, func(), error) {
	picker, err := balance.New(cc.Balance)
	if err != nil {
		return nil, nil, err
	}
	if e := cc.EWMA; e != nil && cc.Balance == "ewma" {
		picker = balance.NewEWMA(e.Decay.D(), e.DefaultRTT.D())
	}
	rt := &clusterRT{cfg: cc}
	log := a.log.With("cluster", cc.Name)
	opts := upstream.Options{
		Name:           cc.Name,
		Picker:         picker,
		ConnectTimeout: cc.ConnectTimeout.D(),
		Outlier: upstream.OutlierPolicy{
			ConsecutiveFailures: cc.OutlierDetection.ConsecutiveFailures,
			BaseEjectionTime:    cc.OutlierDetection.BaseEjectionTime.D(),
			MaxEjectionPercent:  cc.OutlierDetection.MaxEjectionPercent,
		},
		HasHealthCheck: cc.HealthCheck != nil,
		Dial:           a.opts.dial,
		Log:            log,
		Observer: upstream.Observer{
			ConnectError: func(ep *upstream.Endpoint, err error) {
				a.metrics.ConnectErrors.WithLabelValues(cc.Name, ep.Addr).Inc()
				log.Debug("connect failed", "endpoint", ep.Addr, "error", err)
			},
			Ejected: func(ep *upstream.Endpoint) {
				a.metrics.Ejections.WithLabelValues(cc.Name, ep.Addr).Inc()
			},
		},
	}
	if cc.TLS != nil {
		if rt.tls, err = tlsconfig.NewClient(*cc.TLS); err != nil {
			return nil, nil, err
		}
		rt.tls.OnReject = a.peerRejected("cluster " + cc.Name)
		opts.TLS = rt.tls.ForAddr
	}
	opts.Outlier.Consecutive5xx = cc.OutlierDetection.Consecutive5xx
	opts.Zone = a.zonePolicy(cc, &opts.Observer)
	rt.up = upstream.New(opts)
	if old != nil && old.clusters[cc.Name] != nil {
		rt.up.Inherit(old.clusters[cc.Name].up)
	}
	if cc.Credentials != nil {
		if rt.creds, err = credentials.New(*cc.Credentials); err != nil {
			return nil, nil, fmt.Errorf("credentials: %w", err)
		}
	}
	rt.proto = &protocol.Cluster{Config: cc, Upstream: rt.up, TLS: opts.TLS, Credentials: rt.creds, Instances: map[string]protocol.Instance{}}
	env := a.env(next)
	env.Cluster = rt.proto
	for _, p := range a.protocols {
		inst, err := p.NewCluster(env)
		if err != nil {
			rt.stopInstances(next.cfg)
			return nil, nil, err
		}
		if inst != nil {
			rt.proto.Instances[p.Name()] = inst
		}
	}

	var chk health.Checker
	if hc := cc.HealthCheck; hc != nil {
		chk = a.checker(hc, rt.proto)
		_, rt.roles = chk.(health.ReplicationChecker)
	}
	if rt.roles {
		rt.watch = failover.NewWatcher(rt.up, failoverHook(cc.OnFailover), log)
		rt.watch.OnChange = func(failover.Event) { a.metrics.PrimaryChanges.WithLabelValues(cc.Name).Inc() }
		rt.watch.OnHook = func(_ failover.Event, err error) {
			result := "success"
			if err != nil {
				result = "failure"
			}
			a.metrics.FailoverHooks.WithLabelValues(cc.Name, result).Inc()
		}
		if old != nil && old.clusters[cc.Name] != nil && old.clusters[cc.Name].watch != nil {
			// A reload in the middle of a failover must still see it.
			rt.watch.Inherit(old.clusters[cc.Name].watch)
		}
	}

	src, err := a.discoverySource(cc, rt, old)
	if err != nil {
		rt.stopInstances(next.cfg)
		return nil, nil, err
	}
	if src == nil {
		static := make([]upstream.Target, len(cc.Endpoints))
		for i, e := range cc.Endpoints {
			static[i] = upstream.Target{Addr: e.Address, Weight: e.Weight, Name: e.Name, Zone: e.Zone}
		}
		// Static endpoints are in place before the first connection.
		rt.up.SetEndpoints(static)
		rt.names = newResolveState(cc)
	}

	ctx, cancel := context.WithCancel(context.Background())
	rt.cancel = cancel
	start := func() {
		if rt.names != nil {
			go rt.names.run(ctx, a.lookupHost, config.DefaultDNSRefresh)
		}
		if src != nil {
			updates := a.metrics.DiscoveryUpdates.WithLabelValues(cc.Name, rt.disc.source)
			go src.Run(ctx, func(ts []upstream.Target) {
				rt.up.SetEndpoints(ts)
				updates.Inc()
			})
		}
		if hc := cc.HealthCheck; hc != nil {
			pol := health.Policy{Interval: hc.Interval.D(), Timeout: hc.Timeout.D(),
				Thresholds: upstream.Thresholds{Healthy: hc.HealthyThreshold, Unhealthy: hc.UnhealthyThreshold}}
			var afterRound func()
			if w := rt.watch; w != nil {
				if cc.OnFailover != nil {
					go w.Run(ctx)
				}
				afterRound = w.Observe
			}
			go health.Run(ctx, rt.up, chk, pol, log, func(ep *upstream.Endpoint, _ error) {
				a.metrics.HealthTransitions.WithLabelValues(cc.Name, ep.Addr, ep.Health().String()).Inc()
			}, afterRound)
		}
		if rt.tls != nil {
			go a.watchTLS(ctx, "cluster "+cc.Name, rt.tls.Files(), rt.tls.Reload)
		}
		if rt.creds != nil {
			go a.watchCredentials(ctx, cc.Name, rt.creds)
		}
	}
	return rt, start, nil
}

// stopInstances stops the protocols' instances of a cluster that failed
// to build.
func (rt *clusterRT) stopInstances(cfg *config.Config) {
	for _, inst := range rt.proto.Instances {
		inst.Stop(nil, cfg, cfg)
	}
}

// failoverHook is the on_failover of a cluster, nil when it has none.
func failoverHook(f *config.OnFailover) *failover.Hook {
	if f == nil {
		return nil
	}
	return &failover.Hook{Command: f.Command, Webhook: f.Webhook, Timeout: f.Timeout.D(),
		Client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
}

// checker returns the active health checker of a type: a protocol's
// (redis, postgres: see protocol.Checker), or http, amqp or tcp. The amqp
// and http checks go through the cluster's TLS when it has one; tcp only
// connects.
func (a *App) checker(hc *config.HealthCheck, c *protocol.Cluster) health.Checker {
	if p, ok := a.protocol[hc.Type].(protocol.Checker); ok {
		return p.Checker(hc, c)
	}
	plain := (&net.Dialer{}).DialContext
	switch hc.Type {
	case "http":
		tr := &http.Transport{DisableKeepAlives: true, DialContext: plain}
		scheme := "http"
		if c.TLS != nil {
			scheme = "https"
			tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				return (&tls.Dialer{Config: c.TLS(addr)}).DialContext(ctx, network, addr)
			}
		}
		var ranges [][2]int
		for _, s := range hc.ExpectStatus {
			lo, hi, _ := config.StatusRange(s)
			ranges = append(ranges, [2]int{lo, hi})
		}
		return health.HTTP(&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
			scheme, hc.Path, hc.Host, ranges)
	case "amqp":
		dial := health.Dialer(plain)
		if c.TLS != nil {
			dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				return (&tls.Dialer{Config: c.TLS(addr)}).DialContext(ctx, network, addr)
			}
		}
		return health.AMQP(dial)
	default:
		return health.TCP(plain)
	}
}

// watchTLS calls reload whenever files change, until ctx ends. A failed
// reload is logged and counted; the previous files stay in use.
func (a *App) watchTLS(ctx context.Context, owner string, files []string, reload func() error) {
	watch.Files(ctx, files, tlsPoll, func() {
		if err := reload(); err != nil {
			a.metrics.TLSReloadErrors.WithLabelValues(owner).Inc()
			a.log.Error("TLS files changed but do not load; keeping the previous ones", "owner", owner, "error", err)
			return
		}
		a.log.Info("TLS files reloaded", "owner", owner)
	})
}

// watchCredentials re-reads a cluster's token and password files whenever
// they change, until ctx ends: the same watch as for TLS files (inotify on
// the directory, so the kubelet's ..data symlink swap is seen, backed by a
// poll). A file that disappears or empties keeps its last value; that is
// logged and counted, never the values.
func (a *App) watchCredentials(ctx context.Context, cluster string, s *credentials.Set) {
	watch.Files(ctx, s.Files(), tlsPoll, func() {
		if err := s.Reload(); err != nil {
			a.metrics.CredentialReloadErrors.WithLabelValues(cluster).Inc()
			a.log.Error("credential file changed but cannot be used; keeping its last value", "cluster", cluster, "error", err)
			return
		}
		a.log.Info("credential files reloaded", "cluster", cluster)
	})
}

func (a *App) listenerSettings(lc config.Listener, rt *listenerRT) listener.Settings {
	name := lc.Name
	s := listener.Settings{
		Name:           name,
		MaxConnections: lc.MaxConnections,
		Handler:        rt.inst.Handler(),
		Events: listener.Events{
			Accepted: func() {
				a.metrics.ConnectionsTotal.WithLabelValues(name).Inc()
				a.metrics.ConnectionsActive.WithLabelValues(name).Inc()
			},
			Closed:       func() { a.metrics.ConnectionsActive.WithLabelValues(name).Dec() },
			Rejected:     func(reason string) { a.metrics.ConnectionsRejected.WithLabelValues(name, reason).Inc() },
			HandshakeErr: func(error) { a.metrics.HandshakeErrors.WithLabelValues(name).Inc() },
		},
	}
	if rt.tls != nil {
		s.TLS = rt.tls.Config()
	}
	return s
}
