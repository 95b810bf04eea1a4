package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// The closed sets of names the schema accepts.
var (
	Protocols        = []string{"tcp"}
	BalancePolicies  = []string{"round_robin", "weighted", "least_connections", "random", "p2c", "ring_hash", "first"}
	HealthCheckTypes = []string{"tcp", "amqp"}
	TLSVersions      = map[string]uint16{"1.0": tls.VersionTLS10, "1.1": tls.VersionTLS11, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}
	logLevels        = []string{"debug", "info", "warn", "error"}
	logFormats       = []string{"text", "json"}
	namePattern      = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
)

type validator struct {
	c    *Config
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

func (c *Config) validate() Errors {
	v := &validator{c: c}
	v.address("admin.address", c.Admin.Address)
	v.oneOf("log.level", "log level", c.Log.Level, logLevels)
	v.oneOf("log.format", "log format", c.Log.Format, logFormats)
	if c.DrainTimeout < 0 {
		v.errorf("drain_timeout", "must not be negative")
	}
	if len(c.Listeners) == 0 {
		v.errorf("listeners", "at least one listener is required")
	}

	clusters := map[string]bool{}
	for i, cl := range c.Clusters {
		p := fmt.Sprintf("clusters[%d]", i)
		v.name(p+".name", cl.Name, "cluster", clusters)
		v.cluster(p, &cl)
	}

	listeners := map[string]bool{}
	addresses := map[string]string{}
	if !strings.HasSuffix(c.Admin.Address, ":0") { // port 0: any free port
		addresses[c.Admin.Address] = "admin.address"
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
		v.oneOf(p+".protocol", "protocol", l.Protocol, Protocols)
		switch {
		case l.Cluster == "":
			v.errorf(p+".cluster", "required")
		case !clusters[l.Cluster]:
			e := Error{Path: p + ".cluster", Line: c.Line(p + ".cluster"), Msg: fmt.Sprintf("unknown cluster %q", l.Cluster)}
			var names []string
			for n := range clusters {
				names = append(names, n)
			}
			if s := suggest(l.Cluster, names); s != "" {
				e.Hint = fmt.Sprintf("did you mean %q?", s)
			}
			v.errs = append(v.errs, e)
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
		}
	}
	return v.errs
}

func (v *validator) cluster(p string, cl *Cluster) {
	hasDiscovery := cl.Discovery != nil && cl.Discovery.DNS != nil
	switch {
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
		if d.DNS == nil {
			v.errorf(p+".discovery", "needs a source (dns)")
		} else {
			dp := p + ".discovery.dns"
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
	}
	v.oneOf(p+".balance", "policy", cl.Balance, BalancePolicies)
	if cl.ConnectTimeout <= 0 {
		v.errorf(p+".connect_timeout", "must be positive")
	}
	if h := cl.HealthCheck; h != nil {
		hp := p + ".health_check"
		v.oneOf(hp+".type", "health check type", h.Type, HealthCheckTypes)
		if h.Interval <= 0 {
			v.errorf(hp+".interval", "must be positive")
		}
		if h.Timeout <= 0 {
			v.errorf(hp+".timeout", "must be positive")
		} else if h.Timeout > h.Interval {
			v.errorf(hp+".timeout", "must not be longer than interval (%s)", h.Interval.D())
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
	if t := cl.TLS; t != nil {
		v.keyPair(p+".tls", t.CertFile, t.KeyFile, false)
		v.file(p+".tls.ca_file", t.CAFile)
		v.tlsVersion(p+".tls.min_version", t.MinVersion)
		v.ciphers(p+".tls.cipher_suites", t.CipherSuites)
	}
}

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
