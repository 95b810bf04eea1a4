package pgproxy

import (
	"reflect"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/userlist"
)

// ListenerOptions are listeners[].postgres: the pooler of a postgres
// listener and what its clients see (pgbouncer's settings where it has
// them, with its defaults). How the servers are reached is the cluster's
// (ClusterOptions).
type ListenerOptions struct {
	PoolMode              string          `yaml:"pool_mode"` // session | transaction
	MaxClientConnections  int             `yaml:"max_client_connections"`
	PoolSize              int             `yaml:"pool_size"` // per (database, user, server)
	MinPoolSize           int             `yaml:"min_pool_size"`
	ReservePoolSize       int             `yaml:"reserve_pool_size"`
	ReservePoolTimeout    config.Duration `yaml:"reserve_pool_timeout"`
	QueryWaitTimeout      config.Duration `yaml:"query_wait_timeout"`
	MaxPreparedStatements int             `yaml:"max_prepared_statements"`
	Auth                  AuthOptions     `yaml:"auth"`
	ClientTLS             *TLSOptions     `yaml:"client_tls"`
	// Target is which servers the listener's sessions go to, in libpq's
	// target_session_attrs words: primary | standby | prefer_standby |
	// any (default). Roles come from the cluster's postgres health check.
	Target string `yaml:"target"`
	// MaxReplicationLag skips standbys further behind (0: no limit);
	// only for target standby and prefer_standby.
	MaxReplicationLag config.Duration `yaml:"max_replication_lag"`
}

// ClusterOptions are clusters[].postgres: how the poolers of the postgres
// listeners that use the cluster open, keep and reset server connections.
type ClusterOptions struct {
	ServerIdleTimeout    config.Duration `yaml:"server_idle_timeout"`
	ServerLifetime       config.Duration `yaml:"server_lifetime"`
	ServerConnectTimeout config.Duration `yaml:"server_connect_timeout"`
	ServerResetQuery     string          `yaml:"server_reset_query"`
	ServerTLS            *TLSOptions     `yaml:"server_tls"`
}

// AuthOptions are where client credentials come from: a pgbouncer
// userlist.txt ("user" "secret" lines; plain, md5 or SCRAM-SHA-256
// secrets), and for users not in it, when User is set, pgbouncer's
// auth_query run as auth_user (whose password is in the users file).
type AuthOptions struct {
	UsersFile string `yaml:"users_file"`
	Query     string `yaml:"query"` // default DefaultAuthQuery when User is set
	User      string `yaml:"user"`
}

// TLSOptions are TLS towards clients (client_tls: cert_file, key_file,
// mode disable | allow | prefer | require) or servers (server_tls: mode
// disable | allow | prefer | require | verify-ca | verify-full, ca_file,
// cert_file, key_file, server_name).
type TLSOptions struct {
	Mode       string `yaml:"mode"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
	// MatchSAN: server_tls with mode verify-ca or verify-full only.
	MatchSAN []config.SANMatch `yaml:"match_san"`
}

// Defaults of listeners[].postgres and clusters[].postgres: pgbouncer's.
const (
	DefaultAuthQuery             = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"
	DefaultPoolMode              = "session"
	DefaultTarget                = "any"
	DefaultMaxClientConnections  = 100
	DefaultPoolSize              = 20
	DefaultMaxPreparedStatements = 200
	DefaultReservePoolTimeout    = 5 * time.Second
	DefaultQueryWaitTimeout      = 120 * time.Second
	DefaultServerIdleTimeout     = 600 * time.Second
	DefaultServerLifetime        = 3600 * time.Second
	DefaultServerConnectTimeout  = 15 * time.Second
	DefaultServerResetQuery      = "DISCARD ALL"
	DefaultClientTLSMode         = "prefer" // when client_tls is written
	DefaultServerTLSMode         = "prefer" // when server_tls is written
)

// The names the options accept.
var (
	PoolModes      = []string{"session", "transaction"}
	Targets        = []string{"primary", "standby", "prefer_standby", "any"}
	ClientTLSModes = []string{"disable", "allow", "prefer", "require"}
	ServerTLSModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
)

// ListenerOptions returns a new listeners[].postgres.
func (*Protocol) ListenerOptions() any { return &ListenerOptions{} }

// ClusterOptions returns a new clusters[].postgres.
func (*Protocol) ClusterOptions() any { return &ClusterOptions{} }

// Moved are the keys that were listeners[].postgres's before they were the
// cluster's.
func (*Protocol) Moved() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"server_idle_timeout", "server_lifetime", "server_connect_timeout", "server_reset_query", "server_tls"} {
		m["listeners[].postgres."+k] = "clusters[].postgres." + k
	}
	return m
}

// listenerOptions are the postgres options of a listener of protocol
// postgres (filled in by config.Parse).
func listenerOptions(l *config.Listener) *ListenerOptions {
	return l.Options["postgres"].(*ListenerOptions)
}

// clusterOptions are the postgres options of a cluster that a postgres
// listener uses (filled in by config.Parse).
func clusterOptions(cl *config.Cluster) *ClusterOptions {
	return cl.Options["postgres"].(*ClusterOptions)
}

// Default fills in pgbouncer's defaults; a duration or count written as 0
// stays 0 (off).
func (o *ListenerOptions) Default(c *config.Check) {
	p := c.Path
	if o.PoolMode == "" {
		o.PoolMode = DefaultPoolMode
	}
	if o.Target == "" {
		o.Target = DefaultTarget
	}
	for _, f := range []struct {
		v    *int
		name string
		def  int
	}{
		{&o.MaxClientConnections, "max_client_connections", DefaultMaxClientConnections},
		{&o.PoolSize, "pool_size", DefaultPoolSize},
		{&o.MaxPreparedStatements, "max_prepared_statements", DefaultMaxPreparedStatements},
	} {
		if *f.v == 0 && !c.Has(p+"."+f.name) {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		v    *config.Duration
		name string
		def  time.Duration
	}{
		{&o.ReservePoolTimeout, "reserve_pool_timeout", DefaultReservePoolTimeout},
		{&o.QueryWaitTimeout, "query_wait_timeout", DefaultQueryWaitTimeout},
	} {
		if *f.v == 0 && !c.Has(p+"."+f.name) {
			*f.v = config.Duration(f.def)
		}
	}
	if o.Auth.User != "" && o.Auth.Query == "" {
		o.Auth.Query = DefaultAuthQuery
	}
	if o.ClientTLS == nil {
		o.ClientTLS = &TLSOptions{Mode: "disable"}
	} else if o.ClientTLS.Mode == "" {
		o.ClientTLS.Mode = DefaultClientTLSMode
	}
}

// Default fills in pgbouncer's defaults; a duration written as 0 stays 0
// (off).
func (o *ClusterOptions) Default(c *config.Check) {
	p := c.Path
	for _, f := range []struct {
		v    *config.Duration
		name string
		def  time.Duration
	}{
		{&o.ServerIdleTimeout, "server_idle_timeout", DefaultServerIdleTimeout},
		{&o.ServerLifetime, "server_lifetime", DefaultServerLifetime},
		{&o.ServerConnectTimeout, "server_connect_timeout", DefaultServerConnectTimeout},
	} {
		if *f.v == 0 && !c.Has(p+"."+f.name) {
			*f.v = config.Duration(f.def)
		}
	}
	if o.ServerResetQuery == "" && !c.Has(p+".server_reset_query") {
		o.ServerResetQuery = DefaultServerResetQuery
	}
	if o.ServerTLS == nil {
		o.ServerTLS = &TLSOptions{Mode: "disable"}
	} else if o.ServerTLS.Mode == "" {
		o.ServerTLS.Mode = DefaultServerTLSMode
	}
}

// Validate checks the options and what a postgres listener refuses
// besides: listener tls, idle_timeout and a cluster with tls (PostgreSQL
// negotiates TLS inside its protocol, and a pool keeps idle clients).
func (o *ListenerOptions) Validate(c *config.Check) {
	p, l := c.Path, c.Listener
	if l.IdleTimeout != config.Duration(config.DefaultIdleTimeout) {
		c.Errorf(c.Parent+".idle_timeout", "not used by postgres listeners (only tcp and http listeners close idle clients)")
	}
	if l.TLS != nil {
		c.Errorf(c.Parent+".tls", "PostgreSQL negotiates TLS inside its protocol (SSLRequest): use postgres.client_tls instead")
	}
	if cl := c.Cluster; cl != nil && cl.TLS != nil {
		c.Errorf(c.Parent+".cluster", "cluster %q has tls, but PostgreSQL negotiates TLS inside its protocol: use %s.postgres.server_tls instead", l.Cluster, c.ClusterPath)
	}
	c.OneOf(p+".pool_mode", "pool mode", o.PoolMode, PoolModes)
	if o.MaxClientConnections < 1 {
		c.Errorf(p+".max_client_connections", "must be at least 1")
	}
	if o.PoolSize < 1 {
		c.Errorf(p+".pool_size", "must be at least 1")
	}
	if o.MinPoolSize < 0 {
		c.Errorf(p+".min_pool_size", "must not be negative")
	} else if o.MinPoolSize > o.PoolSize && o.PoolSize >= 1 {
		c.Errorf(p+".min_pool_size", "must not be more than pool_size (%d)", o.PoolSize)
	}
	if o.ReservePoolSize < 0 {
		c.Errorf(p+".reserve_pool_size", "must not be negative")
	}
	if o.MaxPreparedStatements < 0 {
		c.Errorf(p+".max_prepared_statements", "must not be negative (0 passes named statements through, for session mode)")
	} else if o.MaxPreparedStatements == 0 && o.PoolMode == "transaction" {
		c.Errorf(p+".max_prepared_statements", "must be at least 1 in transaction mode (named statements move between server connections)")
	}
	for _, d := range []struct {
		name string
		v    config.Duration
		zero bool // 0 allowed: off
	}{
		{"reserve_pool_timeout", o.ReservePoolTimeout, true},
		{"query_wait_timeout", o.QueryWaitTimeout, true},
	} {
		if d.v < 0 {
			c.Errorf(p+"."+d.name, "must not be negative")
		}
	}
	c.OneOf(p+".target", "target", o.Target, Targets)
	if cl := c.Cluster; o.Target != "any" && cl != nil && (cl.HealthCheck == nil || cl.HealthCheck.Type != "postgres") {
		c.Errorf(p+".target", "%s needs cluster %q to have a postgres health_check (it learns which endpoint is the primary)", o.Target, l.Cluster)
	}
	switch {
	case o.MaxReplicationLag < 0:
		c.Errorf(p+".max_replication_lag", "must not be negative")
	case o.MaxReplicationLag > 0 && o.Target != "standby" && o.Target != "prefer_standby":
		c.Errorf(p+".max_replication_lag", "only for target standby or prefer_standby")
	}
	o.Auth.validate(c, p+".auth")
	o.ClientTLS.validateClient(c, p+".client_tls")
}

// Validate checks the options of a cluster that postgres listeners use;
// on a cluster that only listeners of other protocols use, setting them
// is refused (they would be ignored).
func (o *ClusterOptions) Validate(c *config.Check) {
	p := c.Path
	if len(c.UsedBy) > 0 && !c.UsedBy["postgres"] {
		if !reflect.DeepEqual(o, defaultClusterOptions()) {
			c.Errorf(p, "not used by %s listeners (only postgres listeners pool server connections)", config.ProtocolList(c.UsedBy))
		}
		return
	}
	for _, d := range []struct {
		name string
		v    config.Duration
		zero bool // 0 allowed: off
	}{
		{"server_idle_timeout", o.ServerIdleTimeout, true},
		{"server_lifetime", o.ServerLifetime, true},
		{"server_connect_timeout", o.ServerConnectTimeout, false},
	} {
		switch {
		case d.v < 0:
			c.Errorf(p+"."+d.name, "must not be negative")
		case d.v == 0 && !d.zero:
			c.Errorf(p+"."+d.name, "must be positive")
		}
	}
	c.CString(p+".server_reset_query", o.ServerResetQuery, true)
	o.ServerTLS.validateServer(c, p+".server_tls")
}

// defaultClusterOptions are clusters[].postgres when not written.
func defaultClusterOptions() *ClusterOptions {
	o := &ClusterOptions{}
	o.Default(&config.Check{Config: &config.Config{}})
	return o
}

func (a *AuthOptions) validate(c *config.Check, p string) {
	if a.UsersFile == "" {
		c.Errorf(p+".users_file", "required (pgbouncer userlist.txt format: \"user\" \"secret\" lines)")
	} else if c.File(p+".users_file", a.UsersFile) {
		users, err := userlist.Load(a.UsersFile)
		if err != nil {
			c.Errorf(p+".users_file", "%v", err)
		} else if _, ok := users[a.User]; a.User != "" && !ok {
			c.Errorf(p+".user", "%q is not in users_file (its password comes from there, like pgbouncer's auth_user from auth_file)", a.User)
		}
	}
	if a.Query != "" && a.User == "" {
		c.Errorf(p+".query", "needs auth.user (the role that runs it)")
	} else if a.Query != "" && !strings.Contains(a.Query, "$1") {
		c.Errorf(p+".query", "must take the user name as $1 and return (user, secret), like pgbouncer's auth_query")
	}
	c.CString(p+".user", a.User, true)
	c.CString(p+".query", a.Query, true)
}

// validateClient checks client_tls, refusing settings its mode does not
// read.
func (t *TLSOptions) validateClient(c *config.Check, p string) {
	c.OneOf(p+".mode", "client TLS mode", t.Mode, ClientTLSModes)
	switch t.Mode {
	case "disable":
		for _, f := range []struct{ name, val string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
			if f.val != "" {
				c.Errorf(p+"."+f.name, "not used with mode disable")
			}
		}
	case "allow", "prefer":
		if t.CertFile == "" && t.KeyFile == "" {
			c.Errorf(p+".cert_file", "required with mode %s: without a certificate no client gets TLS", t.Mode)
		}
	}
	if t.Mode != "disable" {
		c.KeyPair(p, t.CertFile, t.KeyFile, t.Mode == "require")
	}
	if t.CAFile != "" {
		c.Errorf(p+".ca_file", "client certificates are not checked; remove it")
	}
	if t.ServerName != "" {
		c.Errorf(p+".server_name", "only for server_tls")
	}
	if len(t.MatchSAN) > 0 {
		c.Errorf(p+".match_san", "client certificates are not checked on client_tls; remove it")
	}
}

// validateServer checks server_tls, refusing settings its mode does not
// read, above all a ca_file or server_name that would look like
// verification and is not.
func (t *TLSOptions) validateServer(c *config.Check, p string) {
	c.OneOf(p+".mode", "server TLS mode", t.Mode, ServerTLSModes)
	c.KeyPair(p, t.CertFile, t.KeyFile, false)
	c.File(p+".ca_file", t.CAFile)
	if t.Mode == "verify-ca" && t.CAFile == "" {
		c.Errorf(p+".ca_file", "required with mode verify-ca")
	}
	c.MatchSAN(p+".match_san", t.MatchSAN)
	if len(t.MatchSAN) > 0 && t.Mode != "verify-ca" && t.Mode != "verify-full" {
		c.Errorf(p+".match_san", "needs mode verify-ca or verify-full: mode %s does not verify the server's certificate", t.Mode)
	}
	switch t.Mode {
	case "disable":
		for _, f := range []struct{ name, val string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"ca_file", t.CAFile}, {"server_name", t.ServerName}} {
			if f.val != "" {
				c.Errorf(p+"."+f.name, "not used with mode disable")
			}
		}
	case "allow", "prefer", "require":
		if t.CAFile != "" {
			c.Errorf(p+".ca_file", "not used with mode %s, which does not check the server's certificate; use mode verify-ca or verify-full", t.Mode)
		}
	}
	if t.ServerName != "" && t.Mode != "verify-full" && t.Mode != "disable" {
		c.Errorf(p+".server_name", "only used by mode verify-full (mode %s does not check the host name)", t.Mode)
	}
	c.ServerName(p+".server_name", t.ServerName)
}
