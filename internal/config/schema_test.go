package config

import (
	"strings"
	"testing"
)

// stub is a protocol with no options of its own.
type stub string

func (s stub) Name() string       { return string(s) }
func (stub) ListenerOptions() any { return nil }
func (stub) ClusterOptions() any  { return nil }

// timer is a stub whose listeners time their connections (tcp, http).
type timer struct{ stub }

func (timer) TimesLatency() {}

// ring is a stub that picks endpoints by key, as redis does.
type ring struct{ stub }

func (ring) IgnoredClusterFields() map[string]string {
	return map[string]string{
		"balance":           "a redis cluster picks shards by key hash (redis.distribution)",
		"outlier_detection": "a redis cluster ejects shards with redis.auto_eject_hosts",
	}
}

func (ring) ChecksHealth() {}

// checked is a stub with a health check of its own (postgres).
type checked struct{ stub }

func (checked) ChecksHealth() {}

// testSchemas are the protocols of config's own tests: their names and
// what they read of a cluster (each protocol's package tests its options).
var testSchemas = []Schema{timer{"tcp"}, timer{"http"}, ring{"redis"}, checked{"postgres"}}

// parse is Parse with testSchemas.
func parse(data []byte, env func(string) (string, bool)) (*Config, error) {
	return Parse(data, env, testSchemas)
}

// load is Load with testSchemas.
func load(path string, env func(string) (string, bool)) (*Config, error) {
	return Load(path, env, testSchemas)
}

// echo is a protocol of the tests with options of its own, on listeners
// and on clusters.
type echo struct{}

func (echo) Name() string         { return "echo" }
func (echo) ListenerOptions() any { return &echoListener{} }
func (echo) ClusterOptions() any  { return &echoCluster{} }

type echoListener struct {
	Greeting string   `yaml:"greeting"`
	Repeat   int      `yaml:"repeat"`
	Wait     Duration `yaml:"wait"`
	Password string   `yaml:"password" secret:"true"`
}

func (o *echoListener) Default(c *Check) {
	if o.Greeting == "" {
		o.Greeting = "hello"
	}
	if o.Repeat == 0 && !c.Has(c.Path+".repeat") {
		o.Repeat = 1
	}
}

func (o *echoListener) Validate(c *Check) {
	if o.Repeat < 1 {
		c.Errorf(c.Path+".repeat", "must be at least 1")
	}
	c.OneOf(c.Path+".greeting", "greeting", o.Greeting, []string{"hello", "hi"})
	if c.Cluster != nil && c.Cluster.Options["echo"].(*echoCluster).Shout && o.Repeat > 1 {
		c.Errorf(c.Parent+".cluster", "cluster %q shouts: repeat must be 1", c.Listener.Cluster)
	}
}

type echoCluster struct {
	Shout bool `yaml:"shout"`
}

func (o *echoCluster) Validate(c *Check) {
	if o.Shout && !c.UsedBy["echo"] {
		c.Errorf(c.Path+".shout", "not used by %s listeners", ProtocolList(c.UsedBy))
	}
}

var echoSchemas = append([]Schema{echo{}}, testSchemas...)

// TestProtocolOptions: a protocol's options are decoded by the strict
// decoder (unknown fields, ${VAR}, line numbers), defaulted and validated
// by the protocol, each problem reported with its path and line.
func TestProtocolOptions(t *testing.T) {
	t.Parallel()
	env := func(k string) (string, bool) { return map[string]string{"PW": "s3cret"}[k], k == "PW" }
	const clusters = "clusters:\n  - name: c\n    endpoints: [\"h:1\"]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: echo\n    cluster: c\n    echo: {greting: hi}\n" + clusters,
			`listeners[0].echo.greting: unknown field (line 6); did you mean "greeting"?`},
		{"bad value", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: echo\n    cluster: c\n    echo:\n      wait: soon\n" + clusters,
			`listeners[0].echo.wait: invalid duration "soon" (want a number with a unit, like 5s or 250ms) (line 7)`},
		{"validate", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: echo\n    cluster: c\n    echo:\n      repeat: 0\n" + clusters,
			`listeners[0].echo.repeat: must be at least 1 (line 7)`},
		{"one of", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: echo\n    cluster: c\n    echo:\n      greeting: helo\n" + clusters,
			`listeners[0].echo.greeting: unknown greeting "helo" (line 7); did you mean "hello"?`},
		{"unset variable", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: echo\n    cluster: c\n    echo: {password: \"${NOPE}\"}\n" + clusters,
			`listeners[0].echo.password: environment variable NOPE is not set (line 6)`},
		{"other protocol", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    cluster: c\n    echo: {repeat: 2}\n" + clusters,
			`listeners[0].echo: only for protocol echo (line 5)`},
		{"given twice", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: echo\n    cluster: c\n    echo: {}\n    echo: {}\n" + clusters,
			`listeners[0].echo: field given twice (line 7)`},
		{"cluster options", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: echo\n    cluster: c\n    echo: {repeat: 2}\n" + clusters + "    echo: {shout: true}\n",
			`listeners[0].cluster: cluster "c" shouts: repeat must be 1 (line 5)`},
		{"cluster options unused", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    cluster: c\n" + clusters + "    echo:\n      shout: true\n",
			`clusters[0].echo.shout: not used by tcp listeners (line 9)`},
		{"no such protocol", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: ehco\n    cluster: c\n" + clusters,
			`listeners[0].protocol: unknown protocol "ehco" (line 4); did you mean "echo"?`},
		{"no such options", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    cluster: c\n    ehco: {}\n" + clusters,
			`listeners[0].ehco: unknown field (line 5); did you mean "echo"?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.yaml), env, echoSchemas)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v, want %s", err, tc.want)
			}
		})
	}

	c, err := Parse([]byte("listeners:\n  - {name: l, address: \"127.0.0.1:7000\", protocol: echo, cluster: c, echo: {password: \"${PW}\", repeat: 3}}\n"+
		"  - {name: m, address: \"127.0.0.1:7001\", protocol: echo, cluster: c}\n"+clusters), env, echoSchemas)
	if err != nil {
		t.Fatal(err)
	}
	l, m := c.Listeners[0].Options["echo"].(*echoListener), c.Listeners[1].Options["echo"].(*echoListener)
	if want := (echoListener{Greeting: "hello", Repeat: 3, Password: "s3cret"}); *l != want {
		t.Errorf("listener l: got %+v, want %+v", *l, want)
	}
	if want := (echoListener{Greeting: "hello", Repeat: 1}); *m != want {
		t.Errorf("listener m (no echo block): got %+v, want %+v", *m, want)
	}
	if o, ok := c.Clusters[0].Options["echo"].(*echoCluster); !ok || o.Shout {
		t.Errorf("cluster c of echo listeners: got options %#v, want the empty ones", c.Clusters[0].Options["echo"])
	}

	// The rendered configuration shows the options under their key, the
	// secret redacted, and loads again.
	out, err := c.MarshalRedacted()
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); !strings.Contains(s, "echo:\n") || !strings.Contains(s, "password: "+Redacted) || strings.Contains(s, "s3cret") {
		t.Errorf("rendered config:\n%s", s)
	}
	if _, err := Parse(out, env, echoSchemas); err != nil {
		t.Errorf("the rendered config does not load again: %v\n%s", err, out)
	}
	if l.Password != "s3cret" {
		t.Errorf("rendering changed the configuration: password %q", l.Password)
	}
}
