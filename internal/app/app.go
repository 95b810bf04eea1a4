// Package app assembles a running attache from a configuration: listeners,
// clusters with their discovery, health checks and TLS, the admin server and
// metrics. It owns the lifecycle: a reload is a transaction (build the new
// generation aside, bind what is new, swap, then stop what the old one had
// alone), and shutdown drains connections before exiting.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/admin"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/listener"
	"github.com/attache-proxy/attache/internal/metrics"
	"github.com/attache-proxy/attache/internal/protocol"
	"github.com/attache-proxy/attache/internal/protocols"
	"github.com/attache-proxy/attache/internal/watch"
)

// Options configure an App.
type Options struct {
	// ConfigPath is the file to load and watch. Leave it empty and set
	// Config for a fixed configuration (attache forward, attache demo).
	ConfigPath string
	Config     *config.Config
	LookupEnv  func(string) (string, bool) // nil: os.LookupEnv
	LogOutput  io.Writer                   // nil: os.Stderr
	// AccessLogOutput receives HTTP access logs; nil: os.Stdout.
	AccessLogOutput io.Writer
	LogLevel        string // overrides log.level when set
	// ConfigPoll is how often the config file is compared when inotify
	// misses a change; 0 means 5s.
	ConfigPoll time.Duration

	// dial, when set, makes the TCP and Postgres engines' connections to
	// upstream endpoints; for tests that route addresses a real control
	// plane accepts (the Kubernetes API refuses loopback endpoints) onto
	// loopback listeners. nil: net.Dialer.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// lookupHost, when set, resolves the host names of static endpoints
	// for /ready; for tests that must not ask a DNS server. nil:
	// net.DefaultResolver.
	lookupHost func(ctx context.Context, host string) ([]string, error)
}

// App is a running attache.
type App struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	metrics *metrics.Metrics
	pool    *listener.Pool
	// protocols are the protocols served (internal/protocols), by name in
	// protocol; proc is what they share.
	protocols []protocol.Protocol
	protocol  map[string]protocol.Protocol
	proc      *protocol.Process

	mu       sync.Mutex // serialises apply
	gen      atomic.Pointer[generation]
	draining atomic.Bool
	lastErr  atomic.Pointer[string] // the last failed reload's errors, or nil
	reloads  reloadLog              // the last reloads, for /status

	started atomic.Bool // every listener bound, the first configuration applied

	admin      *http.Server           // nil with admin.address off
	adminAddr  atomic.Pointer[string] // nil until the admin server listens
	probes     *http.Server           // nil without probes
	probesAddr atomic.Pointer[string] // nil until the probe server listens
	serveStop  chan struct{}          // ends the retries of taken admin and probe ports

	zone zoneState // the pod's zone (zone.go)
}

// New loads the configuration, binds every listener and the admin server,
// and starts discovery and health checks. The returned App serves traffic;
// call Run to follow reloads and to drain at shutdown. A configuration error
// is returned as config.Errors.
func New(opts Options) (*App, error) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	if opts.AccessLogOutput == nil {
		opts.AccessLogOutput = os.Stdout
	}
	if opts.ConfigPoll == 0 {
		opts.ConfigPoll = 5 * time.Second
	}
	cfg := opts.Config
	if cfg == nil {
		var err error
		if cfg, err = config.Load(opts.ConfigPath, opts.LookupEnv, protocols.Schemas()); err != nil {
			return nil, err
		}
	}
	a := &App{opts: opts, level: new(slog.LevelVar), metrics: metrics.New()}
	a.setLevel(cfg)
	hopts := &slog.HandlerOptions{Level: a.level}
	if cfg.Log.Format == "json" {
		a.log = slog.New(slog.NewJSONHandler(opts.LogOutput, hopts))
	} else {
		a.log = slog.New(slog.NewTextHandler(opts.LogOutput, hopts))
	}
	a.pool = listener.NewPool(a.log)
	loops, err := eventLoops(opts.LookupEnv)
	if err != nil {
		return nil, err
	}
	a.proc = &protocol.Process{
		Loops:        loops,
		Log:          a.log,
		Metrics:      a.metrics,
		LookupEnv:    opts.LookupEnv,
		AccessLog:    opts.AccessLogOutput,
		WatchTLS:     a.watchTLS,
		PeerRejected: a.peerRejected,
	}
	if err := a.openProtocols(); err != nil {
		a.proc.Loops.Close()
		return nil, err
	}
	a.metrics.Registry.MustRegister(&collector{app: a})

	if err := a.apply(cfg); err != nil {
		a.closeProtocols()
		a.proc.Loops.Close()
		return nil, err
	}
	a.metrics.ReloadSuccessful.Set(1)
	a.metrics.ReloadTimestamp.SetToCurrentTime()
	a.metrics.Reloads.WithLabelValues("success").Inc()
	a.started.Store(true)
	a.serveStop = make(chan struct{})
	if cfg.Admin.Address != config.AdminOff {
		a.admin = &http.Server{Handler: admin.Handler(a, a.metrics.Registry), ReadHeaderTimeout: 10 * time.Second}
		a.startServer("admin server", a.admin, cfg.Admin.Address, &a.adminAddr)
	}
	if cfg.Probes != nil {
		// Reachable from the pod network: small requests, short timeouts.
		a.probes = &http.Server{Handler: admin.ProbeHandler(a), ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 8 << 10}
		a.startServer("probe server", a.probes, cfg.Probes.Address, &a.probesAddr)
	}
	a.log.Info("attache started", "admin", a.AdminAddr(), "probes", a.ProbesAddr(), "listeners", len(cfg.Listeners), "clusters", len(cfg.Clusters))
	return a, nil
}

// openProtocols opens every protocol of internal/protocols.
func (a *App) openProtocols() error {
	a.protocol = map[string]protocol.Protocol{}
	for _, p := range protocols.New() {
		if err := p.Open(a.proc); err != nil {
			a.closeProtocols()
			return fmt.Errorf("protocol %s: %w", p.Name(), err)
		}
		a.protocols = append(a.protocols, p)
		a.protocol[p.Name()] = p
	}
	return nil
}

// closeProtocols closes the protocols opened.
func (a *App) closeProtocols() {
	for _, p := range a.protocols {
		p.Close()
	}
}

// adminRetry is how often a taken admin or probe port is tried again.
const adminRetry = 2 * time.Second

// startServer serves srv (the admin or the probe server) on addr and
// stores the bound address in bound. A port that cannot be bound (another
// attache holds it) never stops the data path: the listeners serve, the
// error is logged, and the bind is retried every adminRetry until it
// succeeds or Shutdown.
func (a *App) startServer(what string, srv *http.Server, addr string, bound *atomic.Pointer[string]) {
	serve := func(ln net.Listener) {
		got := ln.Addr().String()
		bound.Store(&got)
		go srv.Serve(ln) // after Shutdown, Serve closes ln at once
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		serve(ln)
		return
	}
	a.log.Error(what+" cannot listen; the listeners serve without it, and the address is tried again",
		"address", addr, "retry_every", adminRetry, "error", err)
	go func() {
		t := time.NewTicker(adminRetry)
		defer t.Stop()
		for {
			select {
			case <-a.serveStop:
				return
			case <-t.C:
			}
			if ln, err := net.Listen("tcp", addr); err == nil {
				serve(ln)
				a.log.Info(what+" listening", "address", ln.Addr().String())
				return
			}
		}
	}()
}

func (a *App) setLevel(cfg *config.Config) {
	name := cfg.Log.Level
	if a.opts.LogLevel != "" {
		name = a.opts.LogLevel
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(name)); err == nil {
		a.level.Set(l)
	}
}

// Log returns the app's logger.
func (a *App) Log() *slog.Logger { return a.log }

// AdminAddr returns the bound admin address, or "" while there is no
// admin server listening.
func (a *App) AdminAddr() string {
	if p := a.adminAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// lookupHost resolves a static endpoint's host name for /ready.
func (a *App) lookupHost(ctx context.Context, host string) ([]string, error) {
	if a.opts.lookupHost != nil {
		return a.opts.lookupHost(ctx, host)
	}
	return net.DefaultResolver.LookupHost(ctx, host)
}

// ProbesAddr returns the bound probe server address, or "" while there is
// no probe server listening.
func (a *App) ProbesAddr() string {
	if p := a.probesAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// Started reports whether every listener is bound and the first
// configuration applied (the startup probe's /started).
func (a *App) Started() bool { return a.started.Load() }

// ListenerAddr returns the bound address of the named listener, or "".
func (a *App) ListenerAddr(name string) string {
	g := a.gen.Load()
	l := g.cfg.Listener(name)
	if l == nil {
		return ""
	}
	if ln := a.pool.Get(l.Address); ln != nil {
		return ln.Addr().String()
	}
	return ""
}

// Reload loads the configuration file again and applies it. On any error
// the running configuration keeps serving, the error is logged and
// attache_config_last_reload_successful drops to 0.
func (a *App) Reload() error {
	if a.opts.ConfigPath == "" {
		return errors.New("no configuration file to reload (fixed configuration)")
	}
	cfg, err := config.Load(a.opts.ConfigPath, a.opts.LookupEnv, protocols.SchemasOf(a.protocols))
	if err == nil {
		old := a.gen.Load().cfg
		err = a.apply(cfg)
		if err == nil {
			a.warnMoves(old, cfg)
		}
	}
	a.reloads.add(time.Now(), err)
	if err != nil {
		msg := err.Error()
		a.lastErr.Store(&msg)
		a.metrics.ReloadSuccessful.Set(0)
		a.metrics.Reloads.WithLabelValues("failure").Inc()
		a.log.Error("reload failed; the running configuration is unchanged", "file", a.opts.ConfigPath, "errors", msg)
		return err
	}
	a.lastErr.Store(nil)
	a.setLevel(cfg)
	a.metrics.ReloadSuccessful.Set(1)
	a.metrics.ReloadTimestamp.SetToCurrentTime()
	a.metrics.Reloads.WithLabelValues("success").Inc()
	a.log.Info("configuration reloaded", "file", a.opts.ConfigPath)
	return nil
}

// drain waits at least minimum and then until no connection is open, for
// at most timeout in all, or until ctx ends.
func (a *App) drain(ctx context.Context, minimum, timeout time.Duration) {
	a.log.Info("draining", "minimum", minimum, "timeout", timeout, "open_connections", a.pool.Active())
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var least <-chan time.Time // nil once the minimum is over
	if minimum > 0 {
		t := time.NewTimer(minimum)
		defer t.Stop()
		least = t.C
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for least != nil || a.pool.Active() > 0 {
		select {
		case <-deadline.C:
			a.log.Warn("drain timeout; closing the remaining connections", "open_connections", a.pool.Active())
			return
		case <-ctx.Done():
			a.log.Warn("second signal; closing the remaining connections", "open_connections", a.pool.Active())
			return
		case <-least:
			least = nil
		case <-tick.C:
		}
	}
}

// warnMoves logs the admin and probe addresses a reload changed: the
// servers keep their addresses until the next restart (they are not part
// of a generation, and a probe server that moved would fail the kubelet's
// probes, whose port is fixed in the pod spec).
func (a *App) warnMoves(old, cfg *config.Config) {
	if cfg.Admin.Address != old.Admin.Address {
		a.log.Warn("admin.address changed; the admin server moves at the next restart", "address", a.AdminAddr(), "configured", cfg.Admin.Address)
	}
	if was, now := probesAddress(old), probesAddress(cfg); was != now {
		a.log.Warn("probes.address changed; the probe server changes at the next restart", "address", a.ProbesAddr(), "configured", now)
	}
}

// probesAddress is cfg's probes.address, or "off".
func probesAddress(cfg *config.Config) string {
	if cfg.Probes == nil {
		return "off"
	}
	return cfg.Probes.Address
}

// Run follows changes of the configuration file until ctx ends, then drains:
// see Shutdown. hard, when it ends, cuts the drain short.
func (a *App) Run(ctx, hard context.Context) error {
	if a.opts.ConfigPath != "" {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go watch.Files(wctx, []string{a.opts.ConfigPath}, a.opts.ConfigPoll, func() {
			a.log.Info("configuration file changed", "file", a.opts.ConfigPath)
			a.Reload()
		})
	}
	<-ctx.Done()
	a.Shutdown(hard)
	return nil
}

// Shutdown stops being ready at once and keeps serving the application's
// connections, new ones included: for drain_min in any case (a classic
// sidecar gets SIGTERM together with its application, which still
// connects while it drains), then until none is open, for drain_timeout
// in all (counted from the start). ctx ending cuts either wait short. Then
// it closes the listeners and stops every background task. Open
// connections left at the end are cut when the process exits.
func (a *App) Shutdown(ctx context.Context) {
	a.draining.Store(true)
	a.metrics.Draining.Set(1)
	g := a.gen.Load()
	for _, l := range g.listeners {
		l.inst.Drain()
	}
	for _, c := range g.clusters {
		for _, inst := range c.proto.Instances {
			inst.Drain()
		}
	}
	a.drain(ctx, g.cfg.DrainMin.D(), g.cfg.DrainTimeout.D())
	a.pool.Close()
	a.closeProtocols()
	a.mu.Lock()
	g.stop(nil) // the drain is over: what is left is cut
	a.mu.Unlock()
	a.stopZone()
	a.proc.Loops.Close()
	close(a.serveStop)
	for _, srv := range []*http.Server{a.admin, a.probes} {
		if srv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			srv.Shutdown(sctx)
			cancel()
		}
	}
	a.log.Info("stopped")
}

// eventLoops returns the process's event loops, on which every protocol's
// engine serves (see protocol.Process.Loops), or nil when
// ATTACHE_EVENT_LOOPS=off in the environment asks for every protocol's
// portable goroutine path instead: the escape hatch should an engine
// misbehave (as HAProxy's noepoll is), and the path that serves where
// there is no epoll. It is the one switch between the two paths.
func eventLoops(lookupEnv func(string) (string, bool)) (*evloop.Group, error) {
	switch v, _ := lookupEnv("ATTACHE_EVENT_LOOPS"); v {
	case "", "on":
		return evloop.NewGroup(runtime.GOMAXPROCS(0)), nil
	case "off":
		return nil, nil
	default:
		return nil, fmt.Errorf("ATTACHE_EVENT_LOOPS=%q: want on or off", v)
	}
}
