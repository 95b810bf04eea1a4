// Package config defines attache's configuration file: its schema, its
// defaults, a strict YAML decoder that reports every problem with its field
// path and line, and the validation of values and cross-references.
//
// A protocol's own options (listeners[].postgres, clusters[].redis) are
// declared, defaulted and validated by the protocol's package and handed
// to Parse as a Schema (schema.go); config decodes them.
//
// The keys in this file are attache's public contract. A Config returned by
// Load or Parse is complete (defaults filled in) and valid; it is never
// mutated afterwards, so it may be shared between goroutines.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Defaults. Each one has a validation rule and a bad-config test.
const (
	DefaultAdminAddress        = "127.0.0.1:9901"
	DefaultDrainTimeout        = 30 * time.Second
	DefaultDrainMin            = 5 * time.Second
	DefaultMaxConnections      = 10000
	DefaultIdleTimeout         = time.Hour
	DefaultConnectTimeout      = 5 * time.Second
	DefaultBalance             = "round_robin"
	DefaultHealthInterval      = 5 * time.Second
	DefaultFailoverHookTimeout = 10 * time.Second
	DefaultHealthTimeout       = time.Second
	DefaultHealthyThreshold    = 2
	DefaultUnhealthyThreshold  = 3
	DefaultDNSRefresh          = 5 * time.Second
	DefaultConsulAddress       = "127.0.0.1:8500"
	DefaultOutlierFailures     = 5
	DefaultOutlierEjection     = 30 * time.Second
	DefaultOutlierMaxPercent   = 50
	DefaultEWMADecay           = 10 * time.Second
	DefaultEWMADefaultRTT      = 30 * time.Millisecond
)

// Config is the whole configuration file.
type Config struct {
	Admin        Admin    `yaml:"admin"`
	Probes       *Probes  `yaml:"probes"` // nil: no probe server
	Log          Log      `yaml:"log"`
	DrainTimeout Duration `yaml:"drain_timeout"`
	// DrainMin is how long listeners keep accepting after SIGTERM even
	// when no connection is open: a classic sidecar is signalled together
	// with its application, which still connects while it drains.
	DrainMin  Duration   `yaml:"drain_min"`
	Listeners []Listener `yaml:"listeners"`
	Clusters  []Cluster  `yaml:"clusters"`
	// Zone is where the pod's zone comes from, for clusters with
	// zone_aware (see zone.go).
	Zone *Zone `yaml:"zone"`

	// env resolves ${VAR} (Parse's lookupEnv); protocols read the
	// environment through Check.LookupEnv.
	env func(string) (string, bool)

	// lines maps field paths ("clusters[1].balance") to the line they were
	// written on; it lets later checks name the line of a value.
	lines map[string]int
}

// Admin is the admin HTTP server. Address AdminOff runs none.
type Admin struct {
	Address string `yaml:"address"`
}

// AdminOff as admin.address runs no admin server.
const AdminOff = "off"

// Probes is the read-only probe server for the kubelet: GET /health,
// /ready and /started only, on an address the kubelet can reach.
type Probes struct {
	Address string `yaml:"address"`
}

// ReadyIgnore as a listener's or cluster's ready leaves its clusters out
// of /ready (they are listed as notes); ReadyRequire, the default, counts
// them.
const (
	ReadyRequire = "require"
	ReadyIgnore  = "ignore"
)

// Log selects the log format and level.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Listener is an address the application connects to.
type Listener struct {
	Name           string     `yaml:"name"`
	Address        string     `yaml:"address"`
	Protocol       string     `yaml:"protocol"`
	Cluster        string     `yaml:"cluster"`
	TLS            *ServerTLS `yaml:"tls"`
	MaxConnections int        `yaml:"max_connections"`
	IdleTimeout    Duration   `yaml:"idle_timeout"`
	// Ready is require (its clusters count for /ready) or ignore.
	Ready string `yaml:"ready"`
	// Options are the options of the listener's protocol, written under
	// its name (listeners[].postgres), by protocol name; see Schema.
	Options map[string]any `yaml:",inline" options:"listener"`
}

// CIDR is an address prefix, written "10.0.0.0/8" or, for one address,
// "10.0.0.7" (kept as "10.0.0.7/32"). Host bits must be zero and IPv4 is
// written as IPv4.
type CIDR string

func (c *CIDR) decodeScalar(s string) error {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("%q: not an address prefix (want 10.0.0.0/8, fd00::/8 or one address)", s)
		}
		if m := p.Masked(); m != p {
			return fmt.Errorf("%q: host bits set (want %s)", s, m)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("%q: not an address prefix (want 10.0.0.0/8, fd00::/8 or one address)", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("%q: an IPv4-mapped IPv6 prefix never matches (addresses are compared as IPv4): write it as IPv4", s)
	}
	*c = CIDR(p.String())
	return nil
}

// Prefix is the prefix of a CIDR that was decoded (the zero Prefix for
// one that was not).
func (c CIDR) Prefix() netip.Prefix {
	p, _ := netip.ParsePrefix(string(c))
	return p
}

// ServerTLS terminates TLS on a listener.
type ServerTLS struct {
	CertFile          string   `yaml:"cert_file"`
	KeyFile           string   `yaml:"key_file"`
	ClientCAFile      string   `yaml:"client_ca_file"`
	RequireClientCert bool     `yaml:"require_client_cert"`
	MinVersion        string   `yaml:"min_version"`
	CipherSuites      []string `yaml:"cipher_suites"`
	// MatchSAN is the client identities accepted, on top of the CA; it
	// needs require_client_cert.
	MatchSAN []SANMatch `yaml:"match_san"`
}

// Cluster is a named set of endpoints and how to reach them.
type Cluster struct {
	Name             string            `yaml:"name"`
	Endpoints        []Endpoint        `yaml:"endpoints"`
	Discovery        *Discovery        `yaml:"discovery"`
	Balance          string            `yaml:"balance"`
	EWMA             *ClusterEWMA      `yaml:"ewma"` // balance ewma only; filled in with it
	ConnectTimeout   Duration          `yaml:"connect_timeout"`
	HealthCheck      *HealthCheck      `yaml:"health_check"`
	OutlierDetection *OutlierDetection `yaml:"outlier_detection"`
	TLS              *ClientTLS        `yaml:"tls"`
	OnFailover       *OnFailover       `yaml:"on_failover"`
	Credentials      *Credentials      `yaml:"credentials"`
	KubernetesAPI    *KubernetesAPI    `yaml:"kubernetes_api"`
	Ready            string            `yaml:"ready"`      // require | ignore: counts for /ready or not
	ZoneAware        *ZoneAware        `yaml:"zone_aware"` // nil: every zone alike
	// Options are the protocols' options for the cluster's servers,
	// written under their names (clusters[].redis), by protocol name; see
	// Schema.
	Options map[string]any `yaml:",inline" options:"cluster"`
}

// ClusterEWMA tunes balance ewma (Linkerd's default_rtt and decay).
type ClusterEWMA struct {
	// Decay is the time constant over which a latency peak is forgotten.
	Decay Duration `yaml:"decay"`
	// DefaultRTT is the latency assumed of an endpoint not measured yet
	// while a request to it is in flight.
	DefaultRTT Duration `yaml:"default_rtt"`
}

// OnFailover tells someone that another endpoint became the primary of a
// cluster (pgpool's failover_command; attache never promotes). Command
// runs with ATTACHE_CLUSTER, ATTACHE_OLD_PRIMARY and ATTACHE_NEW_PRIMARY
// in its environment; Webhook is POSTed the same as JSON. Either or both.
type OnFailover struct {
	Command []string `yaml:"command" secret:"args"` // argv, not a shell line
	Webhook string   `yaml:"webhook" secret:"url"`  // http:// or https:// URL
	Timeout Duration `yaml:"timeout"`               // default 10s
}

// Credentials are added to every request sent to an HTTP cluster,
// replacing headers of the same name that the application sent. Files are
// re-read when they change (rotated tokens); see docs/credentials.md.
type Credentials struct {
	BearerTokenFile string            `yaml:"bearer_token_file"` // Authorization: Bearer <file content>
	Basic           *BasicAuth        `yaml:"basic"`             // Authorization: Basic
	Headers         map[string]string `yaml:"headers" secret:"true"`
}

// BasicAuth is an HTTP Basic user whose password is in a file.
type BasicAuth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// KubernetesAPI makes a cluster the Kubernetes API server of the pod
// attache runs in, the way kubectl proxy reaches it: the endpoint from
// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, TLS verified with
// the mounted CA, the service-account token as a bearer token, and path
// and host filters. Parse fills the cluster's endpoints, tls and
// credentials from it.
type KubernetesAPI struct {
	Host        string   `yaml:"host"`       // default $KUBERNETES_SERVICE_HOST
	Port        int      `yaml:"port"`       // default $KUBERNETES_SERVICE_PORT
	TokenFile   string   `yaml:"token_file"` // default DefaultServiceAccountDir/token
	CAFile      string   `yaml:"ca_file"`    // default DefaultServiceAccountDir/ca.crt
	AcceptPaths []string `yaml:"accept_paths"`
	RejectPaths []string `yaml:"reject_paths"`
	AcceptHosts []string `yaml:"accept_hosts"`
}

// The defaults of kubernetes_api. The path and host filters are kubectl
// proxy's (--accept-paths, --reject-paths, --accept-hosts), with
// portforward and the proxy subresources of nodes, pods and services
// rejected as well as exec and attach (see docs/kubernetes.md).
const DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

var (
	DefaultKubeAcceptPaths = []string{`^.*`}
	DefaultKubeRejectPaths = []string{`^/api/.*/pods/.*/exec`, `^/api/.*/pods/.*/attach`, `^/api/.*/pods/.*/portforward`,
		`^/api/.*/nodes/.*/proxy`, `^/api/.*/pods/.*/proxy`, `^/api/.*/services/.*/proxy`}
	DefaultKubeAcceptHosts = []string{`^localhost$`, `^127\.0\.0\.1$`, `^\[::1\]$`}
)

// Discovery names the one source of a cluster's endpoints besides a static
// list.
type Discovery struct {
	DNS        *DNSDiscovery        `yaml:"dns"`
	Kubernetes *KubernetesDiscovery `yaml:"kubernetes"`
	Consul     *ConsulDiscovery     `yaml:"consul"`
	File       *FileDiscovery       `yaml:"file"`
}

// KubernetesDiscovery follows the EndpointSlices of one Service: its ready
// endpoints, on the slice port named (or numbered) Port. The API server is
// the pod's own (in-cluster config) unless Kubeconfig names a file.
type KubernetesDiscovery struct {
	Service    string `yaml:"service"`
	Namespace  string `yaml:"namespace"`
	Port       string `yaml:"port"` // a port name, or a number
	Kubeconfig string `yaml:"kubeconfig"`
}

// ConsulDiscovery follows the passing instances of a Consul service with
// blocking queries on /v1/health/service/<service>.
type ConsulDiscovery struct {
	Address    string `yaml:"address"` // host:port of an agent; default DefaultConsulAddress
	Scheme     string `yaml:"scheme"`  // http | https
	CAFile     string `yaml:"ca_file"` // https: verify the agent against it; default the system roots
	Service    string `yaml:"service"`
	Tag        string `yaml:"tag"`        // only instances with this tag
	Datacenter string `yaml:"datacenter"` // default: the agent's
	Token      string `yaml:"token" secret:"true"`
	// ZoneMeta is the node meta key holding an instance's zone when its
	// service has no Locality (Consul 1.17+); "" is DefaultConsulZoneMeta.
	ZoneMeta string `yaml:"zone_meta"`
}

// FileDiscovery reads a cluster's endpoints from a watched file: a YAML
// list written like the endpoints of a cluster ("host:port[ weight=N]").
type FileDiscovery struct {
	Path string `yaml:"path"`
}

// DNSDiscovery resolves A/AAAA records of Name (with Port), or the SRV
// record SRV, every Refresh.
type DNSDiscovery struct {
	Name    string   `yaml:"name"`
	Port    int      `yaml:"port"`
	SRV     string   `yaml:"srv"`
	Refresh Duration `yaml:"refresh"`
}

// HealthCheck is an active health check run against every endpoint.
type HealthCheck struct {
	Type               string   `yaml:"type"`          // tcp | amqp | http
	Path               string   `yaml:"path"`          // http: default /
	Host               string   `yaml:"host"`          // http: Host header
	ExpectStatus       []string `yaml:"expect_status"` // http: "200-299", "204"
	User               string   `yaml:"user"`          // postgres: role to log in as
	Database           string   `yaml:"database"`      // postgres: default "postgres"
	Password           string   `yaml:"password" secret:"true"`
	Interval           Duration `yaml:"interval"`
	Timeout            Duration `yaml:"timeout"`
	HealthyThreshold   int      `yaml:"healthy_threshold"`
	UnhealthyThreshold int      `yaml:"unhealthy_threshold"`
}

// OutlierDetection ejects endpoints that fail to accept connections.
type OutlierDetection struct {
	ConsecutiveFailures int      `yaml:"consecutive_failures"`
	Consecutive5xx      int      `yaml:"consecutive_5xx"` // HTTP: 0 = off
	BaseEjectionTime    Duration `yaml:"base_ejection_time"`
	MaxEjectionPercent  int      `yaml:"max_ejection_percent"`
}

// ClientTLS originates TLS to a cluster's endpoints. Verification is always
// on: with no ca_file the system roots are used.
type ClientTLS struct {
	ServerName   string   `yaml:"server_name"`
	CAFile       string   `yaml:"ca_file"`
	CertFile     string   `yaml:"cert_file"`
	KeyFile      string   `yaml:"key_file"`
	MinVersion   string   `yaml:"min_version"`
	CipherSuites []string `yaml:"cipher_suites"`
	// MatchSAN is the server identities accepted. When set it replaces
	// the host name check (server_name is still sent as SNI): the
	// certificate must chain to ca_file and present one of these names.
	MatchSAN []SANMatch `yaml:"match_san"`
}

// Endpoint is one static backend: "host:port" with optional " weight=N"
// (default 1) and " zone=NAME", or twemproxy's "host:port:weight [name]".
// The name is what a Redis ketama ring hashes (see internal/hashkit); the
// zone is what zone-aware routing compares with the pod's.
type Endpoint struct {
	Address string
	Weight  int
	Name    string
	Zone    string
}

func (e *Endpoint) decodeScalar(s string) error {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return fmt.Errorf("empty endpoint")
	}
	e.Address, e.Weight = fields[0], 1
	rest := fields[1:]
	if _, _, err := net.SplitHostPort(e.Address); err != nil || strings.Count(e.Address, ":") == 2 && !strings.HasPrefix(e.Address, "[") {
		// twemproxy's host:port:weight [name]
		i := strings.LastIndexByte(e.Address, ':')
		if i < 0 {
			return fmt.Errorf("endpoint %q: want host:port", s)
		}
		w, werr := strconv.Atoi(e.Address[i+1:])
		if werr != nil {
			return fmt.Errorf("endpoint %q: want host:port, host:port weight=N or host:port:weight [name]", s)
		}
		if w < 1 || w > 1000 {
			return fmt.Errorf("endpoint %q: weight must be 1-1000", s)
		}
		e.Address, e.Weight = e.Address[:i], w
		if len(rest) > 0 {
			e.Name, rest = rest[0], rest[1:]
		}
		if len(rest) > 0 {
			return fmt.Errorf("endpoint %q: unexpected %q after the name", s, rest[0])
		}
	}
	if _, port, err := net.SplitHostPort(e.Address); err != nil {
		return fmt.Errorf("endpoint %q: want host:port", s)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("endpoint %q: port must be 1-65535", s)
	}
	for _, f := range rest {
		if z, ok := strings.CutPrefix(f, "zone="); ok {
			if err := checkZoneName(z); err != nil {
				return fmt.Errorf("endpoint %q: zone %v", s, err)
			}
			e.Zone = z
			continue
		}
		v, ok := strings.CutPrefix(f, "weight=")
		if !ok {
			return fmt.Errorf("endpoint %q: unknown option %q (want weight=N or zone=NAME)", s, f)
		}
		w, err := strconv.Atoi(v)
		if err != nil || w < 1 || w > 1000 {
			return fmt.Errorf("endpoint %q: weight must be 1-1000", s)
		}
		e.Weight = w
	}
	return nil
}

// String gives the endpoint back in a form it can be written in.
func (e Endpoint) String() string {
	s := e.Address
	switch {
	case e.Name != "":
		return fmt.Sprintf("%s:%d %s", e.Address, e.Weight, e.Name)
	case e.Weight != 1:
		s += fmt.Sprintf(" weight=%d", e.Weight)
	}
	if e.Zone != "" {
		s += " zone=" + e.Zone
	}
	return s
}

// MarshalYAML writes the endpoint in its string form.
func (e Endpoint) MarshalYAML() (any, error) { return e.String(), nil }

// Duration is a time.Duration written as "5s", "250ms", "1h".
type Duration time.Duration

func (d *Duration) decodeScalar(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (want a number with a unit, like 5s or 250ms)", s)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (c *Config) applyDefaults() {
	if c.Admin.Address == "" {
		c.Admin.Address = DefaultAdminAddress
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.DrainTimeout == 0 && !c.has("drain_timeout") {
		c.DrainTimeout = Duration(DefaultDrainTimeout)
	}
	if c.DrainMin == 0 && !c.has("drain_min") {
		c.DrainMin = Duration(min(DefaultDrainMin, c.DrainTimeout.D()))
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.Protocol == "" {
			l.Protocol = "tcp"
		}
		if l.Ready == "" {
			l.Ready = ReadyRequire
		}
		if l.MaxConnections == 0 && !c.has(fmt.Sprintf("listeners[%d].max_connections", i)) {
			l.MaxConnections = DefaultMaxConnections
		}
		if l.IdleTimeout == 0 && !c.has(fmt.Sprintf("listeners[%d].idle_timeout", i)) {
			l.IdleTimeout = Duration(DefaultIdleTimeout)
		}
		if l.TLS != nil && l.TLS.MinVersion == "" {
			l.TLS.MinVersion = "1.2"
		}
	}
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		if cl.Balance == "" {
			cl.Balance = DefaultBalance
		}
		if cl.Balance == "ewma" {
			if cl.EWMA == nil {
				cl.EWMA = &ClusterEWMA{}
			}
			if cl.EWMA.Decay == 0 {
				cl.EWMA.Decay = Duration(DefaultEWMADecay)
			}
			if cl.EWMA.DefaultRTT == 0 {
				cl.EWMA.DefaultRTT = Duration(DefaultEWMADefaultRTT)
			}
		}
		if cl.Ready == "" {
			cl.Ready = ReadyRequire
		}
		if cl.ConnectTimeout == 0 && !c.has(fmt.Sprintf("clusters[%d].connect_timeout", i)) {
			cl.ConnectTimeout = Duration(DefaultConnectTimeout)
		}
		if d := cl.Discovery; d != nil && d.DNS != nil && d.DNS.Refresh == 0 {
			d.DNS.Refresh = Duration(DefaultDNSRefresh)
		}
		if d := cl.Discovery; d != nil && d.Consul != nil {
			if d.Consul.Address == "" {
				d.Consul.Address = DefaultConsulAddress
			}
			if d.Consul.Scheme == "" {
				d.Consul.Scheme = "http"
			}
		}
		if h := cl.HealthCheck; h != nil {
			if h.Type == "" {
				h.Type = "tcp"
			}
			if h.Interval == 0 {
				h.Interval = Duration(DefaultHealthInterval)
			}
			if h.Timeout == 0 {
				h.Timeout = Duration(min(DefaultHealthTimeout, h.Interval.D()))
			}
			if h.HealthyThreshold == 0 {
				h.HealthyThreshold = DefaultHealthyThreshold
			}
			if h.UnhealthyThreshold == 0 {
				h.UnhealthyThreshold = DefaultUnhealthyThreshold
			}
		}
		if cl.OutlierDetection == nil {
			cl.OutlierDetection = &OutlierDetection{}
		}
		o := cl.OutlierDetection
		if o.ConsecutiveFailures == 0 {
			o.ConsecutiveFailures = DefaultOutlierFailures
		}
		if o.BaseEjectionTime == 0 {
			o.BaseEjectionTime = Duration(DefaultOutlierEjection)
		}
		if o.MaxEjectionPercent == 0 && !c.has(fmt.Sprintf("clusters[%d].outlier_detection.max_ejection_percent", i)) {
			o.MaxEjectionPercent = DefaultOutlierMaxPercent
		}
		if cl.TLS != nil && cl.TLS.MinVersion == "" {
			cl.TLS.MinVersion = "1.2"
		}
		if h := cl.HealthCheck; h != nil && h.Type == "postgres" && h.Database == "" {
			h.Database = "postgres"
		}
		if f := cl.OnFailover; f != nil && f.Timeout == 0 && !c.has(fmt.Sprintf("clusters[%d].on_failover.timeout", i)) {
			f.Timeout = Duration(DefaultFailoverHookTimeout)
		}
		if h := cl.HealthCheck; h != nil && h.Type == "http" {
			if h.Path == "" {
				h.Path = "/"
			}
			if len(h.ExpectStatus) == 0 {
				h.ExpectStatus = []string{"200-299"}
			}
		}
	}
}

// has reports whether the file set the field at path explicitly.
func (c *Config) has(path string) bool {
	_, ok := c.lines[path]
	return ok
}

// Line returns the line a field path was written on, or of its nearest
// written parent; 0 when unknown.
func (c *Config) Line(path string) int {
	for path != "" {
		if n, ok := c.lines[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// Listener returns the listener named name, or nil.
func (c *Config) Listener(name string) *Listener {
	for i := range c.Listeners {
		if c.Listeners[i].Name == name {
			return &c.Listeners[i]
		}
	}
	return nil
}

// Cluster returns the cluster named name, or nil.
func (c *Config) Cluster(name string) *Cluster {
	for i := range c.Clusters {
		if c.Clusters[i].Name == name {
			return &c.Clusters[i]
		}
	}
	return nil
}
