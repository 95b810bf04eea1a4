package pgproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/health"
	"github.com/attache-proxy/attache/internal/listener"
	"github.com/attache-proxy/attache/internal/protocol"
	"github.com/attache-proxy/attache/internal/tlsconfig"
	"github.com/attache-proxy/attache/internal/upstream"
	"github.com/attache-proxy/attache/internal/userlist"
)

// Protocol is protocol postgres. Each listener is a Proxy, a pooler of its
// own, kept with its pools across a reload that changes neither the
// listener nor its cluster (the users file is read again). Its engines
// share the process's event-loop threads.
type Protocol struct {
	proc *protocol.Process
}

var _ interface {
	protocol.Protocol
	protocol.Checker
} = (*Protocol)(nil)

// Name is "postgres".
func (*Protocol) Name() string { return "postgres" }

// ChecksHealth: health_check.type postgres is the protocol's Checker.
func (*Protocol) ChecksHealth() {}

// Open keeps the process's loops for the listeners' engines.
func (p *Protocol) Open(proc *protocol.Process) error {
	p.proc = proc
	return nil
}

// Close does nothing: each Proxy stops with its listener.
func (*Protocol) Close() {}

// Describe sends the pools' descriptors.
func (*Protocol) Describe(ch chan<- *prometheus.Desc) { describePostgres(ch) }

// NewCluster returns nil: postgres keeps nothing per cluster.
func (*Protocol) NewCluster(*protocol.Env) (protocol.Instance, error) { return nil, nil }

// Checker is health_check type postgres: it logs in as the check's user
// and learns each endpoint's role and replication lag.
func (*Protocol) Checker(hc *config.HealthCheck, _ *protocol.Cluster) health.Checker {
	user, db, pass := hc.User, hc.Database, hc.Password
	return &health.Postgres{Dial: (&net.Dialer{}).DialContext, Login: func(conn net.Conn) (*pgproto3.Frontend, error) {
		s, err := Login(conn, user, db, pass, map[string]string{"application_name": "attache-health-check"})
		if err != nil {
			return nil, err
		}
		return s.FE, nil
	}}
}

// NewListener builds the listener's Proxy, or carries prev's over when
// neither the listener nor its cluster changed; then only the users file
// is read again.
func (p *Protocol) NewListener(env *protocol.Env, prev protocol.Listener) (protocol.Listener, error) {
	lc := *env.Listener
	if old, ok := prev.(*instance); ok && reflect.DeepEqual(old.cfg, lc) && old.cluster == env.Cluster {
		users, err := userlist.Load(listenerOptions(&lc).Auth.UsersFile)
		if err != nil {
			return nil, fmt.Errorf("postgres.auth.users_file: %w", err)
		}
		return &instance{cfg: lc, cluster: env.Cluster, proxy: old.proxy, cancel: old.cancel, users: users}, nil
	}
	proxy, watch, err := p.build(env)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &instance{cfg: lc, cluster: env.Cluster, proxy: proxy, cancel: cancel, watch: func() { watch(ctx) }}, nil
}

// instance is a postgres listener.
type instance struct {
	cfg     config.Listener
	cluster *protocol.Cluster
	proxy   *Proxy
	cancel  context.CancelFunc // the client_tls and server_tls file watch
	watch   func()             // starts it; nil when carried over
	users   map[string]string  // read again for a carried-over Proxy
}

func (i *instance) Handler() listener.Handler { return i.proxy }

// Start starts the TLS file watch of a new Proxy, or gives a carried-over
// one the users read again.
func (i *instance) Start() {
	if i.watch != nil {
		i.watch()
	}
	if i.users != nil {
		i.proxy.SetUsers(i.users)
	}
}

func (*instance) Drain() {}

// Stop closes the Proxy unless next carries it over.
func (i *instance) Stop(next protocol.Instance, _, _ *config.Config) {
	if n, ok := next.(*instance); ok && n.proxy == i.proxy {
		return
	}
	i.proxy.Close()
	i.cancel()
}

// Status shows the pools: pgbouncer's SHOW POOLS and SHOW STATS.
func (i *instance) Status() protocol.Status {
	if s := i.proxy.Stats(); len(s) > 0 {
		return protocol.Status{{Key: "postgres_pools", Value: s}}
	}
	return nil
}

func (i *instance) Collect(ch chan<- prometheus.Metric) { collectPostgres(ch, i.cfg.Name, i.proxy) }

// build makes the pooler of a postgres listener. watch starts re-reading
// its client_tls and server_tls files when they change, until ctx ends.
func (p *Protocol) build(env *protocol.Env) (proxy *Proxy, watch func(ctx context.Context), err error) {
	lc, up := env.Listener, env.Cluster.Upstream
	pc, sc := listenerOptions(lc), clusterOptions(&env.Cluster.Config)
	users, err := userlist.Load(pc.Auth.UsersFile)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres.auth.users_file: %w", err)
	}
	var watches []func(ctx context.Context)
	cfg := Config{
		Mode:                 SessionMode,
		MaxClients:           pc.MaxClientConnections,
		PoolSize:             pc.PoolSize,
		MinPoolSize:          pc.MinPoolSize,
		ReservePoolSize:      pc.ReservePoolSize,
		ReservePoolTimeout:   pc.ReservePoolTimeout.D(),
		QueryWaitTimeout:     pc.QueryWaitTimeout.D(),
		ServerIdleTimeout:    sc.ServerIdleTimeout.D(),
		ServerLifetime:       sc.ServerLifetime.D(),
		ServerConnectTimeout: sc.ServerConnectTimeout.D(),
		ResetQuery:           sc.ServerResetQuery,
		MaxPrepared:          pc.MaxPreparedStatements,
		Users:                users,
		AuthQuery:            pc.Auth.Query,
		AuthUser:             pc.Auth.User,
		Log:                  env.Log,
		Loops:                p.proc.Loops,
		Dial: func(ctx context.Context, ep *upstream.Endpoint) (net.Conn, string, error) {
			if ep != nil {
				conn, err := up.DialEndpoint(ctx, ep)
				return conn, ep.Addr, err
			}
			conn, ep, err := up.Dial(ctx, 0)
			if err != nil {
				return nil, "", err
			}
			return conn, ep.Addr, nil
		},
		MaxLag:  pc.MaxReplicationLag.D(),
		Cluster: up,
	}
	if cfg.Target, err = ParseTarget(pc.Target); err != nil {
		return nil, nil, fmt.Errorf("postgres.target: %w", err)
	}
	if pc.PoolMode == "transaction" {
		cfg.Mode = TransactionMode
	}
	if t := pc.ClientTLS; t != nil && t.Mode != "disable" && t.CertFile != "" {
		s, err := tlsconfig.NewServer(config.ServerTLS{CertFile: t.CertFile, KeyFile: t.KeyFile, MinVersion: "1.2"})
		if err != nil {
			return nil, nil, fmt.Errorf("postgres.client_tls: %w", err)
		}
		cfg.ClientTLS = s.Config()
		cfg.RequireTLS = t.Mode == "require"
		owner := "listener " + lc.Name + " client_tls"
		watches = append(watches, func(ctx context.Context) { env.WatchTLS(ctx, owner, s.Files(), s.Reload) })
	}
	if t := sc.ServerTLS; t != nil && t.Mode != "disable" {
		owner := "listener " + lc.Name + " server_tls" // the cluster's, one watch per pooler
		s := &pgServerTLS{t: t, match: tlsconfig.NewMatcher(t.MatchSAN)}
		if env.PeerRejected != nil {
			s.reject = env.PeerRejected(owner)
		}
		if err := s.Reload(); err != nil {
			return nil, nil, fmt.Errorf("cluster %s postgres.server_tls: %w", env.Cluster.Config.Name, err)
		}
		cfg.ServerTLS = s.ForAddr
		cfg.ServerTLSRequired = t.Mode == "require" || t.Mode == "verify-ca" || t.Mode == "verify-full"
		if files := s.Files(); len(files) > 0 {
			watches = append(watches, func(ctx context.Context) { env.WatchTLS(ctx, owner, files, s.Reload) })
		}
	}
	watch = func(ctx context.Context) {
		for _, w := range watches {
			go w(ctx)
		}
	}
	return New(cfg), watch, nil
}

// pgServerTLS is server_tls, its files read again by Reload: new server
// connections use the latest ones.
type pgServerTLS struct {
	t      *TLSOptions
	match  *tlsconfig.Matcher // match_san; nil without
	reject func(*tlsconfig.Rejection)
	cur    atomic.Pointer[func(addr string) *tls.Config]
}

// Reload re-reads the files; on error the previous ones stay in use.
func (s *pgServerTLS) Reload() error {
	f, err := serverTLS(s.t)
	if err != nil {
		return err
	}
	s.cur.Store(&f)
	return nil
}

// ForAddr is the TLS configuration for a server connection to addr. With
// match_san (verify-ca and verify-full only) the server's names are
// checked too, once its chain is verified.
func (s *pgServerTLS) ForAddr(addr string) *tls.Config {
	c := (*s.cur.Load())(addr)
	if s.match != nil {
		c = c.Clone()
		c.VerifyConnection = s.match.VerifyConnection(addr, s.reject)
	}
	return c
}

// Files returns the files to watch, as tlsconfig's Files do.
func (s *pgServerTLS) Files() []string {
	return slices.DeleteFunc([]string{s.t.CertFile, s.t.KeyFile, s.t.CAFile}, func(f string) bool { return f == "" })
}

// serverTLS follows libpq's sslmode: allow, prefer and require encrypt
// without checking the certificate; verify-ca checks it against ca_file
// (or the system roots); verify-full also checks the host name.
func serverTLS(t *TLSOptions) (func(addr string) *tls.Config, error) {
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, err
		}
		base.Certificates = []tls.Certificate{cert}
	}
	var roots *x509.CertPool
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no certificates", t.CAFile)
		}
	}
	switch t.Mode {
	case "verify-full":
		return func(addr string) *tls.Config {
			c := base.Clone()
			c.RootCAs = roots
			c.ServerName = t.ServerName
			if c.ServerName == "" {
				c.ServerName, _, _ = net.SplitHostPort(addr)
			}
			return c
		}, nil
	case "verify-ca":
		c := base.Clone()
		c.InsecureSkipVerify = true // checked below, without the host name
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("server sent no certificate")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				var err error
				if certs[i], err = x509.ParseCertificate(r); err != nil {
					return err
				}
			}
			inter := x509.NewCertPool()
			for _, ic := range certs[1:] {
				inter.AddCert(ic)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
		return func(string) *tls.Config { return c }, nil
	default:
		c := base.Clone()
		c.InsecureSkipVerify = true // libpq's allow/prefer/require: encrypted, not authenticated
		return func(string) *tls.Config { return c }, nil
	}
}

var (
	descPGClients = prometheus.NewDesc("attache_postgres_clients",
		"Clients of a pool: active (holding a server connection) or waiting for one.", []string{"listener", "database", "user", "state"}, nil)
	descPGServers = prometheus.NewDesc("attache_postgres_server_connections",
		"Server connections of a pool: active (held by a client) or idle.", []string{"listener", "database", "user", "state"}, nil)
	descPGMaxWait = prometheus.NewDesc("attache_postgres_max_wait_seconds",
		"How long the oldest waiting client of a pool has waited.", []string{"listener", "database", "user"}, nil)
	descPGWait = prometheus.NewDesc("attache_postgres_wait_seconds",
		"Time clients waited for a server connection.", []string{"listener", "database", "user"}, nil)
	descPGXacts = prometheus.NewDesc("attache_postgres_transactions_total",
		"Transactions (up to ReadyForQuery idle) run through a pool.", []string{"listener", "database", "user"}, nil)
	descPGXactTime = prometheus.NewDesc("attache_postgres_transaction_seconds_total",
		"Time spent in transactions.", []string{"listener", "database", "user"}, nil)
	descPGQueries = prometheus.NewDesc("attache_postgres_queries_total",
		"Statements completed (CommandComplete) through a pool.", []string{"listener", "database", "user"}, nil)
	descPGQueryTime = prometheus.NewDesc("attache_postgres_query_seconds_total",
		"Time from a Query or Sync to its ReadyForQuery.", []string{"listener", "database", "user"}, nil)
	descPGWaitTimeouts = prometheus.NewDesc("attache_postgres_wait_timeouts_total",
		"Clients disconnected after query_wait_timeout.", []string{"listener", "database", "user"}, nil)
	descPGReserve = prometheus.NewDesc("attache_postgres_reserve_used_total",
		"Server connections opened from the reserve pool.", []string{"listener", "database", "user"}, nil)
	descPGOpened = prometheus.NewDesc("attache_postgres_server_logins_total",
		"Server connections opened and logged in.", []string{"listener", "database", "user"}, nil)
	descPGLoginErrors = prometheus.NewDesc("attache_postgres_server_login_errors_total",
		"Server connections that failed to connect or log in.", []string{"listener", "database", "user"}, nil)
	descPGLost = prometheus.NewDesc("attache_postgres_server_connections_lost_total",
		"Server connections that failed while a client held them.", []string{"listener", "database", "user"}, nil)
	descPGPrepared = prometheus.NewDesc("attache_postgres_prepared_statements_total",
		"Uses of named prepared statements: hit (the server connection had it) or miss (attache prepared it).", []string{"listener", "database", "user", "result"}, nil)
	descPGPins = prometheus.NewDesc("attache_postgres_pins_total",
		"Clients pinned to their server connection, by the statement kind that pinned them.", []string{"listener", "database", "user", "kind"}, nil)
)

func describePostgres(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPGClients, descPGServers, descPGMaxWait, descPGWait, descPGXacts, descPGXactTime,
		descPGQueries, descPGQueryTime, descPGWaitTimeouts, descPGReserve, descPGOpened, descPGLoginErrors, descPGLost, descPGPrepared, descPGPins} {
		ch <- d
	}
}

func collectPostgres(ch chan<- prometheus.Metric, listener string, p *Proxy) {
	for _, s := range p.Stats() {
		l := []string{listener, s.Database, s.User}
		gauge := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(l, extra...)...)
		}
		counter := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(l, extra...)...)
		}
		gauge(descPGClients, float64(s.ClientsActive), "active")
		gauge(descPGClients, float64(s.ClientsWaiting), "waiting")
		gauge(descPGServers, float64(s.ServersActive), "active")
		gauge(descPGServers, float64(s.ServersIdle), "idle")
		gauge(descPGMaxWait, s.MaxWait)
		buckets := map[float64]uint64{}
		for i, b := range WaitBuckets {
			buckets[b] = s.WaitBuckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(descPGWait, uint64(s.WaitCount), s.WaitTime, buckets, l...)
		counter(descPGXacts, float64(s.Transactions))
		counter(descPGXactTime, s.XactTime)
		counter(descPGQueries, float64(s.Queries))
		counter(descPGQueryTime, s.QueryTime)
		counter(descPGWaitTimeouts, float64(s.WaitTimeouts))
		counter(descPGReserve, float64(s.ReserveUsed))
		counter(descPGOpened, float64(s.ServersOpened))
		counter(descPGLoginErrors, float64(s.LoginErrors))
		counter(descPGLost, float64(s.ServersLost))
		counter(descPGPrepared, float64(s.PreparedHits), "hit")
		counter(descPGPrepared, float64(s.PreparedMisses), "miss")
		for kind, n := range s.Pins {
			counter(descPGPins, float64(n), kind)
		}
	}
}
