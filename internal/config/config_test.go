package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func noEnv(string) (string, bool) { return "", false }

func TestGoodFile(t *testing.T) {
	c, err := load("testdata/good.yml", noEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	cl := c.Cluster("redis-main")
	if got, want := cl.Endpoints[1], (Endpoint{Address: "redis-b.example:6379", Weight: 3}); got != want {
		t.Errorf("endpoint: got %+v, want %+v", got, want)
	}
	if got := c.Cluster("srv").Discovery.DNS.Refresh.D(); got != DefaultDNSRefresh {
		t.Errorf("default refresh: got %v, want %v", got, DefaultDNSRefresh)
	}
	if got, want := *c.Cluster("users").Discovery.Kubernetes, (KubernetesDiscovery{Service: "users", Namespace: "shop", Port: "http"}); got != want {
		t.Errorf("kubernetes discovery: got %+v, want %+v", got, want)
	}
	if got := c.Listener("cache").IdleTimeout.D(); got != 5*time.Minute {
		t.Errorf("idle_timeout: got %v, want 5m", got)
	}
	if got := c.DrainTimeout.D(); got != 10*time.Second {
		t.Errorf("drain_timeout: got %v, want 10s", got)
	}
	if got := c.DrainMin.D(); got != 3*time.Second {
		t.Errorf("drain_min: got %v, want 3s", got)
	}
	if c.Probes == nil || c.Probes.Address != "0.0.0.0:9902" {
		t.Errorf("probes: got %+v, want address 0.0.0.0:9902", c.Probes)
	}
	if got := c.Cluster("srv").Ready; got != ReadyIgnore {
		t.Errorf("clusters srv ready: got %q, want ignore", got)
	}
}

func TestEndpointForms(t *testing.T) {
	for in, want := range map[string]Endpoint{
		"10.0.0.1:6379":                     {Address: "10.0.0.1:6379", Weight: 1},
		"redis-b:6379 weight=3":             {Address: "redis-b:6379", Weight: 3},
		"redis-shard-0.redis:6379:1 shard0": {Address: "redis-shard-0.redis:6379", Weight: 1, Name: "shard0"},
		"10.0.0.3:6379:2":                   {Address: "10.0.0.3:6379", Weight: 2},
		"[::1]:6379":                        {Address: "[::1]:6379", Weight: 1},
	} {
		var e Endpoint
		if err := e.decodeScalar(in); err != nil || e != want {
			t.Errorf("%q: got %+v, %v; want %+v", in, e, err, want)
		}
		var back Endpoint
		if err := back.decodeScalar(e.String()); err != nil || back != e {
			t.Errorf("%q: round trip through %q gave %+v, %v", in, e.String(), back, err)
		}
	}
	for _, bad := range []string{"h:1:0", "h:1:x", "h:1:2 name extra", "h", "h:0"} {
		var e Endpoint
		if err := e.decodeScalar(bad); err == nil {
			t.Errorf("%q accepted as %+v", bad, e)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := parse([]byte(`
listeners: [{name: a, address: "127.0.0.1:7000", cluster: b}]
clusters: [{name: b, endpoints: ["127.0.0.1:7001"], health_check: {}}]
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	l, cl := c.Listeners[0], c.Clusters[0]
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"admin.address", c.Admin.Address, "127.0.0.1:9901"},
		{"drain_timeout", c.DrainTimeout.D(), 30 * time.Second},
		{"drain_min", c.DrainMin.D(), 5 * time.Second},
		{"probes", c.Probes, (*Probes)(nil)},
		{"listener ready", l.Ready, "require"},
		{"cluster ready", cl.Ready, "require"},
		{"protocol", l.Protocol, "tcp"},
		{"max_connections", l.MaxConnections, DefaultMaxConnections},
		{"idle_timeout", l.IdleTimeout.D(), time.Hour},
		{"balance", cl.Balance, "round_robin"},
		{"connect_timeout", cl.ConnectTimeout.D(), 5 * time.Second},
		{"health_check.type", cl.HealthCheck.Type, "tcp"},
		{"health_check.interval", cl.HealthCheck.Interval.D(), 5 * time.Second},
		{"health_check.timeout", cl.HealthCheck.Timeout.D(), time.Second},
		{"outlier.consecutive_failures", cl.OutlierDetection.ConsecutiveFailures, 5},
		{"outlier.max_ejection_percent", cl.OutlierDetection.MaxEjectionPercent, 50},
		{"endpoint weight", cl.Endpoints[0].Weight, 1},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// TestBadFile checks that every problem of a file is reported at once, with
// its path and line, against a golden list.
func TestBadFile(t *testing.T) {
	_, err := load("testdata/bad.yml", noEnv)
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %v, want Errors", err)
	}
	got := errs.Error() + "\n"
	if *update {
		os.WriteFile("testdata/bad.yml.errors", []byte(got), 0o644)
	}
	want, _ := os.ReadFile("testdata/bad.yml.errors")
	if got != string(want) {
		t.Errorf("errors:\n%s\nwant:\n%s", got, want)
	}
}

func TestBadValues(t *testing.T) {
	t.Parallel()
	const base = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	const httpBase = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, routes: "
	const httpEnd = "}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]"
	for _, tc := range []struct{ name, yaml, want string }{
		{"syntax", "listeners: [", "invalid YAML"},
		{"no listeners", "clusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners: at least one listener is required"},
		{"no endpoints", base + "clusters: [{name: c}]", "clusters[0]: needs endpoints or discovery (line 2)"},
		{"both sources", base + "clusters: [{name: c, endpoints: [\"h:1\"], discovery: {dns: {name: x, port: 1}}}]", "clusters[0].discovery: give endpoints or discovery, not both (line 2)"},
		{"dns no port", base + "clusters: [{name: c, discovery: {dns: {name: x}}}]", "clusters[0].discovery.dns.port: must be 1-65535"},
		{"srv with port", base + "clusters: [{name: c, discovery: {dns: {srv: _x._tcp.y, port: 3}}}]", "comes from the SRV record"},
		{"two sources", base + "clusters: [{name: c, discovery: {dns: {name: x, port: 1}, kubernetes: {service: s, namespace: n, port: http}}}]", "clusters[0].discovery: give one source (dns, kubernetes, consul or file), not several (line 2)"},
		{"empty discovery", base + "clusters: [{name: c, discovery: {}}]", "clusters[0].discovery: needs a source (dns, kubernetes, consul or file) (line 2)"},
		{"k8s no service", base + "clusters: [{name: c, discovery: {kubernetes: {namespace: n, port: http}}}]", "clusters[0].discovery.kubernetes.service: required (line 2)"},
		{"k8s service name", base + "clusters: [{name: c, discovery: {kubernetes: {service: Users, namespace: n, port: http}}}]", `clusters[0].discovery.kubernetes.service: "Users" is not a Service name (lower-case letters, digits and '-', starting with a letter, at most 63) (line 2)`},
		{"k8s no namespace", base + "clusters: [{name: c, discovery: {kubernetes: {service: s, port: http}}}]", "clusters[0].discovery.kubernetes.namespace: required (line 2)"},
		{"k8s namespace name", base + "clusters: [{name: c, discovery: {kubernetes: {service: s, namespace: shop_1, port: http}}}]", `clusters[0].discovery.kubernetes.namespace: "shop_1" is not a namespace name (lower-case letters, digits and '-', at most 63) (line 2)`},
		{"k8s no port", base + "clusters: [{name: c, discovery: {kubernetes: {service: s, namespace: n}}}]", "clusters[0].discovery.kubernetes.port: required (the EndpointSlice port's name, or its number) (line 2)"},
		{"k8s port number", base + "clusters: [{name: c, discovery: {kubernetes: {service: s, namespace: n, port: 70000}}}]", "clusters[0].discovery.kubernetes.port: must be 1-65535 (line 2)"},
		{"k8s port name", base + "clusters: [{name: c, discovery: {kubernetes: {service: s, namespace: n, port: HTTP}}}]", `clusters[0].discovery.kubernetes.port: "HTTP" is not a port name (lower-case letters, digits and '-', at most 63) or number (line 2)`},
		{"k8s kubeconfig", base + "clusters: [{name: c, discovery: {kubernetes: {service: s, namespace: n, port: http, kubeconfig: /nonexistent/kc}}}]", `clusters[0].discovery.kubernetes.kubeconfig: no such file "/nonexistent/kc" (line 2)`},
		{"k8s and endpoints", base + "clusters: [{name: c, endpoints: [\"h:1\"], discovery: {kubernetes: {service: s, namespace: n, port: http}}}]", "clusters[0].discovery: give endpoints or discovery, not both (line 2)"},
		{"dup endpoint", base + "clusters: [{name: c, endpoints: [\"h:1\", \"h:1\"]}]", "clusters[0].endpoints[1]: endpoint h:1 is listed twice"},
		{"bad port", base + "clusters: [{name: c, endpoints: [\"h:70000\"]}]", "port must be 1-65535"},
		{"bad option", base + "clusters: [{name: c, endpoints: [\"h:1 wieght=2\"]}]", `unknown option "wieght=2"`},
		{"health type", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: ampq}}]", `unknown health check type "ampq" (line 2); did you mean "amqp"?`},
		{"threshold", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {healthy_threshold: -1}}]", "healthy_threshold: must be at least 1"},
		{"ejection pct", base + "clusters: [{name: c, endpoints: [\"h:1\"], outlier_detection: {max_ejection_percent: 101}}]", "must be 0-100"},
		{"tls missing cert", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c, tls: {key_file: /k}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].tls.cert_file: required with key_file"},
		{"tls no file", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c, tls: {cert_file: /nonexistent/c, key_file: /nonexistent/k}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", `listeners[0].tls.cert_file: no such file "/nonexistent/c" (line 1)`},
		{"client cert needs ca", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c, tls: {require_client_cert: true}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "needs client_ca_file"},
		{"tls version", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {min_version: \"1.4\"}}]", `unknown TLS version "1.4"`},
		{"cipher", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {cipher_suites: [RC4]}}]", `clusters[0].tls.cipher_suites[0]: unknown cipher suite "RC4"`},
		{"match_san without client certs", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c,\n  tls: {match_san: [{dns: a.b}]}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].tls.match_san: needs require_client_cert: true (and client_ca_file): without a verified client certificate there is no name to match (line 2)"},
		{"match_san two kinds", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {match_san: [{dns: a.b, uri: \"spiffe://td/x\"}]}}]", "clusters[0].tls.match_san[0]: give exactly one of dns, uri, uri_prefix or ip (line 2)"},
		{"match_san empty entry", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {match_san: [{}]}}]", "clusters[0].tls.match_san[0]: give exactly one of dns, uri, uri_prefix or ip (line 2)"},
		{"match_san unknown kind", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {match_san: [{uri_regex: \".*\"}]}}]", `clusters[0].tls.match_san[0].uri_regex: unknown field (line 2); did you mean "uri_prefix"?`},
		{"match_san wildcard", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {match_san: [{dns: \"*.shop.svc\"}]}}]", `clusters[0].tls.match_san[0].dns: "*.shop.svc": wildcards belong in certificates, not in match_san; list the name the peer must cover (line 2)`},
		{"match_san dns", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {match_san: [{dns: \"a..b\"}]}}]", `clusters[0].tls.match_san[0].dns: "a..b": want dot-separated labels`},
		{"match_san uri", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {match_san: [{uri: orders}]}}]", `clusters[0].tls.match_san[0].uri: "orders": want an absolute URI such as spiffe://cluster.local/ns/shop/sa/orders (line 2)`},
		{"match_san spiffe port", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {match_san: [{uri: \"spiffe://td:8/x\"}]}}]", `clusters[0].tls.match_san[0].uri: "spiffe://td:8/x": a SPIFFE ID is spiffe://<trust domain>/<path>, without user, port, query or fragment (line 2)`},
		{"match_san prefix slash", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {match_san: [{uri_prefix: \"spiffe://td/ns/shop\"}]}}]", `clusters[0].tls.match_san[0].uri_prefix: "spiffe://td/ns/shop": must end with "/"`},
		{"match_san ip", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: {match_san: [{ip: 10.0.0}]}}]", `clusters[0].tls.match_san[0].ip: "10.0.0" is not an IP address (line 2)`},
		{"probes no address", "probes: {}\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", "probes.address: required (line 1)"},
		{"probes bad address", "probes: {address: \"0.0.0.0\"}\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", `probes.address: "0.0.0.0": want host:port (line 1)`},
		{"probes unknown key", "probes: {adress: \"0.0.0.0:9902\"}\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", "probes.adress: unknown field"},
		{"probes admin clash", "admin: {address: \"127.0.0.1:9902\"}\nprobes: {address: \"127.0.0.1:9902\"}\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", "probes.address: address 127.0.0.1:9902 is already used by admin.address (line 2)"},
		{"probes listener clash", "probes: {address: \"127.0.0.1:7000\"}\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].address: address 127.0.0.1:7000 is already used by probes.address"},
		{"probes wildcard admin port", "probes: {address: \"0.0.0.0:9901\"}\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", "probes.address: 0.0.0.0:9901 binds every address, so its port is taken by admin.address 127.0.0.1:9901 (line 1)"},
		{"probes wildcard listener port", "probes: {address: \":7000\"}\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", "probes.address: :7000 binds every address, so its port is taken by listeners[0] 127.0.0.1:7000 (line 1)"},
		{"drain_min negative", "drain_min: -1s\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", "drain_min: must not be negative (line 1)"},
		{"drain_min over timeout", "drain_timeout: 2s\ndrain_min: 3s\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", "drain_min: must not be longer than drain_timeout (2s) (line 2)"},
		{"drain_min duration", "drain_min: 5\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", `drain_min: invalid duration "5"`},
		{"listener ready", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c, ready: ignored}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", `listeners[0].ready: unknown ready mode "ignored" (line 1); did you mean "ignore"?`},
		{"cluster ready", base + "clusters: [{name: c, endpoints: [\"h:1\"], ready: optional}]", `clusters[0].ready: unknown ready mode "optional" (line 2); want one of ["require" "ignore"]`},
		{"admin clash", "admin: {address: \"127.0.0.1:7000\"}\n" + base + "clusters: [{name: c, endpoints: [\"h:1\"]}]", "already used by admin.address"},
		{"dup cluster", base + "clusters: [{name: c, endpoints: [\"h:1\"]}, {name: c, endpoints: [\"h:2\"]}]", `duplicate cluster name "c"`},
		{"bad name", "listeners: [{name: \"a b\", address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", `"a b": use letters`},
		{"not a list", "listeners: {name: a}", "listeners: expected a list, got a mapping (line 1)"},
		{"not a map", base + "clusters: [{name: c, endpoints: [\"h:1\"], tls: yes}]", `clusters[0].tls: expected a mapping, got "yes"`},
		{"bool", base + "clusters: [{name: c, endpoints: [\"h:1\"]}]\nlog: {level: loud}", `log.level: unknown log level "loud"`},
		{"twice", base + "clusters: [{name: c, name: d, endpoints: [\"h:1\"]}]", "clusters[0].name: field given twice"},
		{"unset env", base + "clusters: [{name: c, endpoints: [\"${NOPE}:1\"]}]", "clusters[0].endpoints[0]: environment variable NOPE is not set (line 2)"},
		{"http check status", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: http, expect_status: [\"299-200\"]}}]", `expect_status[0]: status "299-200": want a code or a range`},
		{"http check path", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: http, path: healthz}}]", "health_check.path: must start with /"},
		{"idle timeout", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c, idle_timeout: 0s}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].idle_timeout: must be positive"},
		{"on_failover empty", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: postgres, user: u}, on_failover: {timeout: 5s}}]", "clusters[0].on_failover: needs command or webhook (line 2)"},
		{"on_failover empty argv", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: postgres, user: u}, on_failover: {command: [\"\"]}}]", "clusters[0].on_failover.command[0]: must name the program to run (line 2)"},
		{"on_failover webhook", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: postgres, user: u}, on_failover: {webhook: \"ftp://x/y\"}}]", `clusters[0].on_failover.webhook: want an http:// or https:// URL, got "ftp://x/<redacted>" (line 2)`},
		{"on_failover timeout", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: postgres, user: u}, on_failover: {webhook: \"http://x/y\", timeout: 0s}}]", "clusters[0].on_failover.timeout: must be positive (line 2)"},
		{"on_failover without roles", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: tcp}, on_failover: {command: [/bin/true]}}]", "clusters[0].on_failover: needs a postgres health_check (it learns which endpoint is the primary) (line 2)"},
		{"on_failover unknown key", base + "clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: postgres, user: u}, on_failover: {comand: [/bin/true]}}]", "clusters[0].on_failover.comand: unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), noEnv)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestExpandEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HOST": "db", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tc := range []struct{ in, want, err string }{
		{in: "plain", want: "plain"},
		{in: "${HOST}:5432", want: "db:5432"},
		{in: "${MISSING:-fallback}", want: "fallback"},
		{in: "${EMPTY:-fallback}", want: "fallback"},
		{in: "${EMPTY}", want: ""},
		{in: "pa$$word", want: "pa$word"},
		{in: "$$${HOST}", want: "$db"},
		{in: "cost $5", want: "cost $5"},
		{in: "${MISSING}", err: "environment variable MISSING is not set"},
		{in: "${A}${B}", err: "environment variable A, B is not set"},
		{in: "${HOST", err: "unclosed"},
		{in: "${1X}", err: "invalid environment variable name"},
	} {
		got, err := expandEnv(tc.in, lookup)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("expandEnv(%q): got error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("expandEnv(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

type secretHolder struct {
	Name  string            `yaml:"name"`
	Token string            `yaml:"token" secret:"true"`
	Extra map[string]string `yaml:"extra" secret:"true"`
}

func TestRedactedCopy(t *testing.T) {
	in := &secretHolder{Name: "n", Token: "s3cret", Extra: map[string]string{"k": "v"}}
	out := redactedCopy(reflectValue(in), false).Interface().(secretHolder)
	if out.Token != Redacted || out.Extra["k"] != Redacted || out.Name != "n" {
		t.Errorf("got %+v, want secrets redacted and name kept", out)
	}
	if in.Token != "s3cret" || in.Extra["k"] != "v" {
		t.Errorf("original changed: %+v", in)
	}
}

func TestMarshalRedactedRoundTrip(t *testing.T) {
	c, err := load("testdata/good.yml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.MarshalRedacted()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := parse(out, noEnv)
	if err != nil {
		t.Fatalf("re-parse of rendered config: %v\n%s", err, out)
	}
	if got, want := c2.Clusters[0].Endpoints[1].String(), "redis-b.example:6379 weight=3"; got != want {
		t.Errorf("endpoint after round trip: got %q, want %q", got, want)
	}
	if got, want := c2.Cluster("users").TLS.MatchSAN, c.Cluster("users").TLS.MatchSAN; len(want) != 4 || !reflect.DeepEqual(got, want) {
		t.Errorf("match_san after round trip: got %v, want %v (4 entries)", got, want)
	}
	if !reflect.DeepEqual(c2.Probes, c.Probes) || c2.DrainMin != c.DrainMin || c2.Cluster("srv").Ready != ReadyIgnore {
		t.Errorf("after round trip: got probes %+v, drain_min %v, srv ready %q; want %+v, %v, ignore", c2.Probes, c2.DrainMin, c2.Cluster("srv").Ready, c.Probes, c.DrainMin)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/good.yml", "testdata/bad.yml"} {
		b, _ := os.ReadFile(name)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parse(data, noEnv) // must not panic
	})
}

func reflectValue(p *secretHolder) reflect.Value { return reflect.ValueOf(p).Elem() }

func TestOnFailoverDefaults(t *testing.T) {
	t.Parallel()
	c, err := parse([]byte("listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"+
		"clusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: postgres, user: u}, on_failover: {command: [/usr/bin/notify, --cluster, c]}}]"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	f := c.Clusters[0].OnFailover
	if got := f.Timeout.D(); got != DefaultFailoverHookTimeout {
		t.Errorf("timeout: got %v, want %v", got, DefaultFailoverHookTimeout)
	}
	if got := strings.Join(f.Command, " "); got != "/usr/bin/notify --cluster c" {
		t.Errorf("command: got %q", got)
	}
}

func TestParseEndpoints(t *testing.T) {
	t.Parallel()
	got, err := ParseEndpoints("p.yaml", []byte("# partners\n- a:1\n- \"b:2 weight=5\"\n- \"[::1]:3\"\n"))
	want := []Endpoint{{Address: "a:1", Weight: 1}, {Address: "b:2", Weight: 5}, {Address: "[::1]:3", Weight: 1}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
	if got, err := ParseEndpoints("p.yaml", []byte("[]\n")); err != nil || len(got) != 0 {
		t.Errorf("empty list: got %v, %v; want no endpoints and no error", got, err)
	}
	for _, tc := range []struct{ name, data, want string }{
		{"empty file", "", "p.yaml: empty file; want a list of endpoints (write [] for none)"},
		{"comment only", "# nothing\n", "p.yaml: empty file"},
		{"mapping", "endpoints: [a:1]\n", `p.yaml:1: want a list of endpoints like ["10.0.0.1:443", "b.example:443 weight=2"], got a mapping`},
		{"no port", "- a:1\n- b\n", `p.yaml:2: endpoint "b": want host:port`},
		{"weight", "- a:1\n- a:2 weight=0\n", `p.yaml:2: endpoint "a:2 weight=0": weight must be 1-1000`},
		{"nested", "- a:1\n- [b:1]\n", "p.yaml:2: want an endpoint string, got a list"},
		{"twice", "- a:1\n- b:1\n- a:1 weight=2\n", "p.yaml:3: endpoint a:1 is listed twice (first on line 1)"},
		{"syntax", "- a:1\n- [\n", "p.yaml:"},
	} {
		if _, err := ParseEndpoints("p.yaml", []byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestDiscoveryConfig(t *testing.T) {
	t.Parallel()
	const base = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	partners := filepath.Join(t.TempDir(), "partners.yaml")
	os.WriteFile(partners, []byte("- a:1\n"), 0o644)
	c, err := parse([]byte(base+"clusters:\n  - name: c\n    discovery: {consul: {service: orders, token: \"${CONSUL_HTTP_TOKEN}\"}}\n  - name: f\n    discovery: {file: {path: "+partners+"}}\n"),
		func(k string) (string, bool) {
			return map[string]string{"CONSUL_HTTP_TOKEN": "s3cret"}[k], k == "CONSUL_HTTP_TOKEN"
		})
	if err != nil {
		t.Fatal(err)
	}
	want := ConsulDiscovery{Address: DefaultConsulAddress, Scheme: "http", Service: "orders", Token: "s3cret"}
	if got := *c.Cluster("c").Discovery.Consul; got != want {
		t.Errorf("consul: got %+v, want %+v", got, want)
	}
	if b, _ := c.MarshalRedacted(); strings.Contains(string(b), "s3cret") {
		t.Errorf("the Consul token shows in the redacted config:\n%s", b)
	}

	for _, tc := range []struct{ name, yaml, want string }{
		{"no source", "discovery: {}", "clusters[0].discovery: needs a source (dns, kubernetes, consul or file) (line 2)"},
		{"two sources", "discovery: {dns: {name: x, port: 1}, file: {path: " + partners + "}}", "clusters[0].discovery: give one source (dns, kubernetes, consul or file), not several (line 2)"},
		{"consul no service", "discovery: {consul: {address: \"127.0.0.1:8500\"}}", "clusters[0].discovery.consul.service: required (line 2)"},
		{"consul bad service", "discovery: {consul: {service: \"a/b\"}}", `clusters[0].discovery.consul.service: "a/b": not a Consul service name (letters, digits, '-', '_' and '.') (line 2)`},
		{"consul address", "discovery: {consul: {service: s, address: consul}}", `clusters[0].discovery.consul.address: "consul": want host:port (line 2)`},
		{"consul port 0", "discovery: {consul: {service: s, address: \"h:0\"}}", `clusters[0].discovery.consul.address: "h:0": port must be 1-65535 (line 2)`},
		{"consul scheme", "discovery: {consul: {service: s, scheme: htps}}", `clusters[0].discovery.consul.scheme: unknown scheme "htps" (line 2); did you mean "https"?`},
		{"consul ca on http", "discovery: {consul: {service: s, ca_file: " + partners + "}}", "clusters[0].discovery.consul.ca_file: only with scheme https (line 2)"},
		{"consul ca missing", "discovery: {consul: {service: s, scheme: https, ca_file: /nonexistent/ca.pem}}", `clusters[0].discovery.consul.ca_file: no such file "/nonexistent/ca.pem" (line 2)`},
		{"consul tag", "discovery: {consul: {service: s, tag: \"v 2\"}}", `clusters[0].discovery.consul.tag: "v 2": must not contain spaces (line 2)`},
		{"consul dc", "discovery: {consul: {service: s, datacenter: \"dc/1\"}}", `clusters[0].discovery.consul.datacenter: "dc/1": not a Consul datacenter name (line 2)`},
		{"consul token env", "discovery: {consul: {service: s, token: \"${CONSUL_HTTP_TOKEN}\"}}", "clusters[0].discovery.consul.token: environment variable CONSUL_HTTP_TOKEN is not set (line 2)"},
		{"consul unknown key", "discovery: {consul: {service: s, datacentre: dc1}}", `clusters[0].discovery.consul.datacentre: unknown field (line 2); did you mean "datacenter"?`},
		{"file no path", "discovery: {file: {}}", "clusters[0].discovery.file.path: required (line 2)"},
		{"file missing", "discovery: {file: {path: /nonexistent/partners.yaml}}", `clusters[0].discovery.file.path: no such file "/nonexistent/partners.yaml" (line 2)`},
		{"with endpoints", "endpoints: [\"h:1\"], discovery: {file: {path: " + partners + "}}", "clusters[0].discovery: give endpoints or discovery, not both (line 2)"},
	} {
		_, err := parse([]byte(base+"clusters: [{name: c, "+tc.yaml+"}]"), noEnv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseEndpoints(f *testing.F) {
	for _, s := range []string{"- a:1\n- \"b:2 weight=5\"\n", "[]", "", "- [x]\n", "{a: 1}", "- h:1:2 name\n", "- \"[::1]:3\"\n- a:1\n- a:1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		eps, err := ParseEndpoints("f.yaml", []byte(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, e := range eps {
			if seen[e.Address] || e.Weight < 1 || e.Weight > 1000 {
				t.Fatalf("accepted %+v (duplicate or bad weight) from %q", e, data)
			}
			seen[e.Address] = true
		}
	})
}

// TestDrainMinDefault: drain_min defaults to 5s, or to drain_timeout when
// that is shorter, so that a short drain_timeout alone stays valid.
func TestDrainMinDefault(t *testing.T) {
	const rest = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]\n"
	for _, tc := range []struct {
		name, yaml string
		want       time.Duration
	}{
		{"default", "", DefaultDrainMin},
		{"short drain_timeout", "drain_timeout: 2s\n", 2 * time.Second},
		{"zero drain_timeout", "drain_timeout: 0s\n", 0},
		{"given", "drain_min: 1s\n", time.Second},
		{"off", "drain_min: 0s\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse([]byte(tc.yaml+rest), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.DrainMin.D(); got != tc.want {
				t.Errorf("drain_min: got %v, want %v", got, tc.want)
			}
		})
	}
}
