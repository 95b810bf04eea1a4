package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The closed sets of names the schema accepts.
var (
	BalancePolicies = []string{"round_robin", "weighted", "least_connections", "least_request", "random", "p2c", "ring_hash", "first", "ewma"}
	consulSchemes   = []string{"http", "https"}
	TLSVersions     = map[string]uint16{"1.0": tls.VersionTLS10, "1.1": tls.VersionTLS11, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}
	logLevels       = []string{"debug", "info", "warn", "error"}
	logFormats      = []string{"text", "json"}
	readyModes      = []string{ReadyRequire, ReadyIgnore}
	namePattern     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
)

type validator struct {
	c    *Config
	s    schemas
	errs Errors
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, Error{Path: path, Line: v.c.Line(path), Msg: fmt.Sprintf(format, args...)})
}

// oneOf checks that value is in set, suggesting the closest name if not.
func (v *validator) oneOf(path, what, value string, set []string) {
	for _, s := range set {
		if s == value {
			return
		}
	}
	e := Error{Path: path, Line: v.c.Line(path), Msg: fmt.Sprintf("unknown %s %q", what, value)}
	if s := suggest(value, set); s != "" {
		e.Hint = fmt.Sprintf("did you mean %q?", s)
	} else {
		e.Hint = fmt.Sprintf("want one of %q", set)
	}
	v.errs = append(v.errs, e)
}

func (c *Config) validate(s schemas) Errors {
	v := &validator{c: c, s: s}
	if c.Admin.Address != AdminOff {
		v.address("admin.address", c.Admin.Address)
	}
	v.oneOf("log.level", "log level", c.Log.Level, logLevels)
	v.oneOf("log.format", "log format", c.Log.Format, logFormats)
	if c.DrainTimeout < 0 {
		v.errorf("drain_timeout", "must not be negative")
	}
	switch {
	case c.DrainMin < 0:
		v.errorf("drain_min", "must not be negative")
	case c.DrainMin > c.DrainTimeout && c.DrainTimeout >= 0:
		v.errorf("drain_min", "must not be longer than drain_timeout (%v)", c.DrainTimeout.D())
	}
	if len(c.Listeners) == 0 {
		v.errorf("listeners", "at least one listener is required")
	}

	clusters := map[string]bool{}
	for i, cl := range c.Clusters {
		p := fmt.Sprintf("clusters[%d]", i)
		v.name(p+".name", cl.Name, "cluster", clusters)
		v.oneOf(p+".ready", "ready mode", cl.Ready, readyModes)
		v.cluster(p, &cl)
		v.zoneAware(p, &cl)
	}
	if z := c.Zone; z != nil && z.Kubeconfig != "" && z.NodeLabel != "" {
		v.file("zone.kubeconfig", z.Kubeconfig)
	}

	listeners := map[string]bool{}
	addresses := map[string]string{}
	if !strings.HasSuffix(c.Admin.Address, ":0") && c.Admin.Address != AdminOff { // port 0: any free port
		addresses[c.Admin.Address] = "admin.address"
	}
	if c.Probes != nil && v.address("probes.address", c.Probes.Address) && !strings.HasSuffix(c.Probes.Address, ":0") {
		if other, dup := addresses[c.Probes.Address]; dup {
			v.errorf("probes.address", "address %s is already used by %s", c.Probes.Address, other)
		} else if other := c.portTakenBy(c.Probes.Address); other != "" {
			v.errorf("probes.address", "%s binds every address, so its port is taken by %s", c.Probes.Address, other)
		}
		addresses[c.Probes.Address] = "probes.address"
	}
	for i, l := range c.Listeners {
		p := fmt.Sprintf("listeners[%d]", i)
		v.name(p+".name", l.Name, "listener", listeners)
		if v.address(p+".address", l.Address) {
			if other, dup := addresses[l.Address]; dup {
				v.errorf(p+".address", "address %s is already used by %s", l.Address, other)
			}
			addresses[l.Address] = p + ".address"
		}
		v.oneOf(p+".protocol", "protocol", l.Protocol, s.names())
		v.oneOf(p+".ready", "ready mode", l.Ready, readyModes)
		if _, ok := l.Options[l.Protocol].(ClusterUser); !ok {
			v.clusterRef(p+".cluster", l.Cluster, clusters)
		}
		if cl := c.Cluster(l.Cluster); cl != nil && l.Protocol != "http" {
			v.httpOnly(fmt.Sprintf("clusters[%d]", c.clusterIndex(l.Cluster)), cl, l)
		}
		if l.MaxConnections < 1 {
			v.errorf(p+".max_connections", "must be at least 1")
		}
		if l.IdleTimeout <= 0 {
			v.errorf(p+".idle_timeout", "must be positive")
		}
		if t := l.TLS; t != nil {
			v.keyPair(p+".tls", t.CertFile, t.KeyFile, true)
			v.file(p+".tls.client_ca_file", t.ClientCAFile)
			if t.RequireClientCert && t.ClientCAFile == "" {
				v.errorf(p+".tls.require_client_cert", "needs client_ca_file to verify client certificates against")
			}
			v.tlsVersion(p+".tls.min_version", t.MinVersion)
			v.ciphers(p+".tls.cipher_suites", t.CipherSuites)
			v.matchSAN(p+".tls.match_san", t.MatchSAN)
			if len(t.MatchSAN) > 0 && !t.RequireClientCert {
				v.errorf(p+".tls.match_san", "needs require_client_cert: true (and client_ca_file): without a verified client certificate there is no name to match")
			}
		}
	}
	v.validateOptions()
	v.unusedFields()
	v.wireValues()
	return v.errs
}

// clusterRef checks a reference to a cluster by name.
func (v *validator) clusterRef(path, name string, clusters map[string]bool) {
	if name == "" {
		v.errorf(path, "required")
		return
	}
	if clusters[name] {
		return
	}
	e := Error{Path: path, Line: v.c.Line(path), Msg: fmt.Sprintf("unknown cluster %q", name)}
	var names []string
	for n := range clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	if s := suggest(name, names); s != "" {
		e.Hint = fmt.Sprintf("did you mean %q?", s)
	}
	v.errs = append(v.errs, e)
}

func (v *validator) cluster(p string, cl *Cluster) {
	hasDiscovery := cl.Discovery != nil
	kube := cl.KubernetesAPI != nil
	if kube {
		v.kubernetesAPI(p, cl)
	} else if cl.Credentials != nil {
		v.credentials(p, cl.Credentials)
	}
	switch {
	case kube:
		// Its endpoint, TLS and credentials are derived: kubernetesAPI
		// reported their problems under kubernetes_api.
	case len(cl.Endpoints) == 0 && !hasDiscovery:
		v.errorf(p, "needs endpoints or discovery")
	case len(cl.Endpoints) > 0 && hasDiscovery:
		v.errorf(p+".discovery", "give endpoints or discovery, not both")
	}
	seen := map[string]bool{}
	for j, e := range cl.Endpoints {
		if seen[e.Address] {
			v.errorf(fmt.Sprintf("%s.endpoints[%d]", p, j), "endpoint %s is listed twice", e.Address)
		}
		seen[e.Address] = true
	}
	if d := cl.Discovery; d != nil {
		v.discovery(p+".discovery", d)
	}
	v.oneOf(p+".balance", "policy", cl.Balance, BalancePolicies)
	if e := cl.EWMA; e != nil {
		if cl.Balance != "ewma" {
			v.errorf(p+".ewma", "not used by balance %s (only by balance ewma)", cl.Balance)
		} else {
			if e.Decay <= 0 {
				v.errorf(p+".ewma.decay", "must be positive")
			}
			if e.DefaultRTT <= 0 {
				v.errorf(p+".ewma.default_rtt", "must be positive")
			}
		}
	}
	if cl.ConnectTimeout <= 0 {
		v.errorf(p+".connect_timeout", "must be positive")
	}
	if h := cl.HealthCheck; h != nil {
		hp := p + ".health_check"
		v.oneOf(hp+".type", "health check type", h.Type, v.s.healthCheckTypes())
		if h.Interval <= 0 {
			v.errorf(hp+".interval", "must be positive")
		}
		if h.Timeout <= 0 {
			v.errorf(hp+".timeout", "must be positive")
		} else if h.Timeout > h.Interval {
			v.errorf(hp+".timeout", "must not be longer than interval (%s)", h.Interval.D())
		}
		if h.Type == "http" {
			if !strings.HasPrefix(h.Path, "/") {
				v.errorf(hp+".path", "must start with /")
			}
			for i, st := range h.ExpectStatus {
				if _, _, err := StatusRange(st); err != nil {
					v.errorf(fmt.Sprintf("%s.expect_status[%d]", hp, i), "%v", err)
				}
			}
		}
		if h.Type == "postgres" && h.User == "" {
			v.errorf(hp+".user", "required for a postgres check")
		}
		if h.HealthyThreshold < 1 {
			v.errorf(hp+".healthy_threshold", "must be at least 1")
		}
		if h.UnhealthyThreshold < 1 {
			v.errorf(hp+".unhealthy_threshold", "must be at least 1")
		}
	}
	if o := cl.OutlierDetection; o != nil {
		op := p + ".outlier_detection"
		if o.ConsecutiveFailures < 1 {
			v.errorf(op+".consecutive_failures", "must be at least 1")
		}
		if o.BaseEjectionTime <= 0 {
			v.errorf(op+".base_ejection_time", "must be positive")
		}
		if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
			v.errorf(op+".max_ejection_percent", "must be 0-100")
		}
	}
	if o := cl.OutlierDetection; o != nil && o.Consecutive5xx < 0 {
		v.errorf(p+".outlier_detection.consecutive_5xx", "must not be negative")
	}
	if f := cl.OnFailover; f != nil {
		fp := p + ".on_failover"
		switch {
		case len(f.Command) == 0 && f.Webhook == "":
			v.errorf(fp, "needs command or webhook")
		case len(f.Command) > 0 && f.Command[0] == "":
			v.errorf(fp+".command[0]", "must name the program to run")
		}
		if f.Webhook != "" {
			if u, err := url.Parse(f.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.errorf(fp+".webhook", "want an http:// or https:// URL, got %q", RedactURL(f.Webhook)) // it may hold a token
			}
		}
		if f.Timeout <= 0 {
			v.errorf(fp+".timeout", "must be positive")
		}
		if h := cl.HealthCheck; h == nil || h.Type != "postgres" {
			v.errorf(fp, "needs a postgres health_check (it learns which endpoint is the primary)")
		}
	}
	if t := cl.TLS; t != nil && !kube {
		v.keyPair(p+".tls", t.CertFile, t.KeyFile, false)
		v.file(p+".tls.ca_file", t.CAFile)
		v.tlsVersion(p+".tls.min_version", t.MinVersion)
		v.ciphers(p+".tls.cipher_suites", t.CipherSuites)
		v.matchSAN(p+".tls.match_san", t.MatchSAN)
	}
}

// discovery checks that exactly one source is given, and that source.
func (v *validator) discovery(p string, d *Discovery) {
	n := 0
	for _, given := range []bool{d.DNS != nil, d.Kubernetes != nil, d.Consul != nil, d.File != nil} {
		if given {
			n++
		}
	}
	switch {
	case n == 0:
		v.errorf(p, "needs a source (dns, kubernetes, consul or file)")
	case n > 1:
		v.errorf(p, "give one source (dns, kubernetes, consul or file), not several")
	}
	if d.Kubernetes != nil {
		v.kubernetesDiscovery(p+".kubernetes", d.Kubernetes)
	}
	if d.DNS != nil {
		dp := p + ".dns"
		switch {
		case d.DNS.Name == "" && d.DNS.SRV == "":
			v.errorf(dp, "needs name (A/AAAA with port) or srv")
		case d.DNS.Name != "" && d.DNS.SRV != "":
			v.errorf(dp+".srv", "give name or srv, not both")
		case d.DNS.Name != "" && (d.DNS.Port < 1 || d.DNS.Port > 65535):
			v.errorf(dp+".port", "must be 1-65535")
		case d.DNS.SRV != "" && d.DNS.Port != 0:
			v.errorf(dp+".port", "comes from the SRV record; remove it")
		}
		if d.DNS.Refresh <= 0 {
			v.errorf(dp+".refresh", "must be positive")
		}
	}
	if c := d.Consul; c != nil {
		cp := p + ".consul"
		if v.address(cp+".address", c.Address) {
			if _, port, _ := net.SplitHostPort(c.Address); port == "0" {
				v.errorf(cp+".address", "%q: port must be 1-65535", c.Address)
			}
		}
		v.oneOf(cp+".scheme", "scheme", c.Scheme, consulSchemes)
		if c.CAFile != "" && c.Scheme != "https" {
			v.errorf(cp+".ca_file", "only with scheme https")
		} else {
			v.file(cp+".ca_file", c.CAFile)
		}
		switch {
		case c.Service == "":
			v.errorf(cp+".service", "required")
		case !consulName.MatchString(c.Service):
			v.errorf(cp+".service", "%q: not a Consul service name (letters, digits, '-', '_' and '.')", c.Service)
		}
		if c.Tag != "" && strings.ContainsAny(c.Tag, " \t\r\n") {
			v.errorf(cp+".tag", "%q: must not contain spaces", c.Tag)
		}
		if c.Datacenter != "" && !consulName.MatchString(c.Datacenter) {
			v.errorf(cp+".datacenter", "%q: not a Consul datacenter name", c.Datacenter)
		}
		v.consulZoneMeta(cp, c)
		if strings.ContainsAny(c.Token, " \t\r\n") || !validHeaderValue(c.Token) {
			v.errorf(cp+".token", "must not contain spaces, line breaks or control characters (it is sent as a header)")
		}
	}
	if f := d.File; f != nil {
		if f.Path == "" {
			v.errorf(p+".file.path", "required")
		} else {
			v.file(p+".file.path", f.Path)
		}
	}
}

var consulName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func (v *validator) name(path, name, what string, seen map[string]bool) {
	switch {
	case name == "":
		v.errorf(path, "required")
	case !namePattern.MatchString(name):
		v.errorf(path, "%q: use letters, digits, '_', '.' and '-'", name)
	case seen[name]:
		v.errorf(path, "duplicate %s name %q", what, name)
	}
	seen[name] = true
}

// address checks a host:port to listen on and reports whether it is valid.
// portTakenBy names the admin address or listener whose port a wildcard
// address (0.0.0.0, [::] or no host) would also bind, or "".
func (c *Config) portTakenBy(wildcard string) string {
	host, port, _ := net.SplitHostPort(wildcard)
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return ""
	}
	if _, p, err := net.SplitHostPort(c.Admin.Address); err == nil && p == port {
		return "admin.address " + c.Admin.Address
	}
	for i, l := range c.Listeners {
		if _, p, err := net.SplitHostPort(l.Address); err == nil && p == port {
			return fmt.Sprintf("listeners[%d] %s", i, l.Address)
		}
	}
	return ""
}

func (v *validator) address(path, addr string) bool {
	if addr == "" {
		v.errorf(path, "required")
		return false
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(path, "%q: want host:port", addr)
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.errorf(path, "%q: port must be 0-65535", addr)
		return false
	}
	return true
}

func (v *validator) file(path, name string) bool {
	if name == "" {
		return false
	}
	if _, err := os.Stat(name); err != nil {
		if os.IsNotExist(err) {
			v.errorf(path, "no such file %q", name)
		} else {
			v.errorf(path, "%v", err)
		}
		return false
	}
	return true
}

// keyPair checks a certificate and its key: both or neither, readable, and
// matching. required makes both mandatory.
func (v *validator) keyPair(path, cert, key string, required bool) {
	switch {
	case cert == "" && key == "":
		if required {
			v.errorf(path+".cert_file", "required")
		}
		return
	case cert == "":
		v.errorf(path+".cert_file", "required with key_file")
		return
	case key == "":
		v.errorf(path+".key_file", "required with cert_file")
		return
	}
	okCert, okKey := v.file(path+".cert_file", cert), v.file(path+".key_file", key)
	if okCert && okKey {
		if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
			v.errorf(path+".cert_file", "cannot load with key_file: %v", err)
		}
	}
}

func (v *validator) tlsVersion(path, s string) {
	if _, ok := TLSVersions[s]; !ok {
		v.errorf(path, "unknown TLS version %q; want 1.0, 1.1, 1.2 or 1.3", s)
	}
}

func (v *validator) ciphers(path string, names []string) {
	for i, n := range names {
		if _, ok := CipherSuite(n); !ok {
			v.errorf(fmt.Sprintf("%s[%d]", path, i), "unknown cipher suite %q", n)
		}
	}
}

// CipherSuite returns the ID of a cipher suite by its Go/IANA name.
// Insecure suites are refused.
func CipherSuite(name string) (uint16, bool) {
	for _, s := range tls.CipherSuites() {
		if s.Name == name {
			return s.ID, true
		}
	}
	return 0, false
}

// StatusRange parses "200-299" or "204" into an inclusive range.
func StatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := lo, error(nil)
	if isRange {
		hi, err2 = strconv.Atoi(b)
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("status %q: want a code or a range like 200-299", s)
	}
	return lo, hi, nil
}

var tokenPattern = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
