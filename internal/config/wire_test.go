package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWireValues: a value attache writes into a protocol cannot carry a
// byte that ends a line, a string or a URI component there.
func TestWireValues(t *testing.T) {
	t.Parallel()
	const httpBase = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, routes: [{match: {prefix: /}, to: [{cluster: c}], "
	const httpEnd = "}]}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]"
	const tcp = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"check path CRLF", tcp + `clusters: [{name: c, endpoints: ["h:1"], health_check: {type: http, path: "/h HTTP/1.1\r\nX: y"}}]`, `clusters[0].health_check.path: "/h HTTP/1.1\r\nX: y": want a path (and query) of URI characters`},
		{"check host CRLF", tcp + `clusters: [{name: c, endpoints: ["h:1"], health_check: {type: http, host: "a\r\nX: y"}}]`, `clusters[0].health_check.host: "a\r\nX: y": want host or host:port`},
		{"check user NUL", tcp + `clusters: [{name: c, endpoints: ["h:1"], health_check: {type: postgres, user: "u\0options\0-c x"}}]`, `clusters[0].health_check.user: "u\x00options\x00-c x": must not contain NUL (it ends a string of the PostgreSQL protocol) (line 2)`},
		{"check database NUL", tcp + `clusters: [{name: c, endpoints: ["h:1"], health_check: {type: postgres, user: u, database: "d\0"}}]`, `clusters[0].health_check.database: "d\x00": must not contain NUL`},
		{"check password NUL", tcp + `clusters: [{name: c, endpoints: ["h:1"], health_check: {type: postgres, user: u, password: "p\0q"}}]`, `clusters[0].health_check.password: must not contain NUL`},
		{"cluster sni", tcp + `clusters: [{name: c, endpoints: ["h:1"], tls: {server_name: "a b\n"}}]`, `clusters[0].tls.server_name: "a b\n": want a DNS name or an IP address (line 2)`},
		{"kubernetes_api host", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, cluster: c}]\n" + `clusters: [{name: c, kubernetes_api: {host: "api/x", port: 443}}]`, `clusters[0].kubernetes_api.host: "api/x": want a DNS name or an IP address (line 2)`},
		{"consul token NUL", tcp + `clusters: [{name: c, discovery: {consul: {service: s, token: "t\0"}}}]`, "clusters[0].discovery.consul.token: must not contain spaces, line breaks or control characters (it is sent as a header)"},
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
	for _, ok := range []struct{ name, yaml string }{
		{"check path with query", tcp + `clusters: [{name: c, endpoints: ["h:1"], health_check: {type: http, path: "/health?full=1&x=%20", host: "svc.local"}}]`},
		{"sni ip", tcp + `clusters: [{name: c, endpoints: ["h:1"], tls: {server_name: "10.0.0.1"}}]`},
	} {
		if _, err := parse([]byte(ok.yaml), noEnv); err != nil {
			t.Errorf("%s: got %v, want no error", ok.name, err)
		}
	}
}

// TestRedactedSecrets: /config shows no header value, no argument of the
// failover command, and no user, path or query of the webhook URL; what
// it shows loads again.
func TestRedactedSecrets(t *testing.T) {
	t.Parallel()
	c, err := parse([]byte(`
listeners:
  - name: l
    address: 127.0.0.1:7000
    cluster: c
clusters:
  - name: c
    endpoints: ["h:1"]
    health_check: {type: postgres, user: u}
    on_failover:
      command: [/usr/bin/notify, --token, cmd-s3cret]
      webhook: "https://user:pw-s3cret@hooks.example.com/services/T0/path-s3cret?token=query-s3cret"
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.MarshalRedacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"cmd-s3cret", "--token", "pw-s3cret", "path-s3cret", "query-s3cret", "user:pw"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("got %q in /config, want it redacted:\n%s", secret, out)
		}
	}
	for _, kept := range []string{"/usr/bin/notify", "https://hooks.example.com/" + Redacted} {
		if !strings.Contains(string(out), kept) {
			t.Errorf("got no %q in /config, want it kept:\n%s", kept, out)
		}
	}
	if _, err := parse(out, noEnv); err != nil {
		t.Errorf("the rendered config does not load again: %v\n%s", err, out)
	}
	_, err = parse([]byte("listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"], health_check: {type: postgres, user: u}, on_failover: {webhook: \"ftp://u:pw-s3cret@x/path-s3cret\"}}]"), noEnv)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad webhook: got %v, want an error without the URL's user and path (reload errors are logged and shown in /status)", err)
	}
	if c.Clusters[0].OnFailover.Command[2] != "cmd-s3cret" {
		t.Errorf("the running config changed: got %q", c.Clusters[0].OnFailover.Command)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://hooks.example.com":     "https://hooks.example.com",
		"https://hooks.example.com/":    "https://hooks.example.com",
		"http://u:p@h:8080/":            "http://h:8080/" + Redacted,
		"https://h/services/T0/B0/XXXX": "https://h/" + Redacted,
		"https://h/?token=x":            "https://h/" + Redacted,
		"https://h/#frag":               "https://h/" + Redacted,
		"not a url":                     Redacted,
		"https://h/a%zz":                Redacted,
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q): got %q, want %q", in, got, want)
		}
	}
}

// TestRenderedConfigLoads: /config of a file using every protocol, with
// its defaults written out, loads again (the unused-field checks compare
// with the defaults, not with what was written).
func TestRenderedConfigLoads(t *testing.T) {
	t.Parallel()
	users := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(users, []byte("\"u\" \"p\"\n"), 0o600)
	c, err := parse([]byte(`
listeners:
  - {name: t, address: "127.0.0.1:7000", cluster: tc}
  - {name: h, address: "127.0.0.1:7001", protocol: http, cluster: hc}
  - {name: r, address: "127.0.0.1:7002", protocol: redis, cluster: rc}
  - {name: p, address: "127.0.0.1:7003", protocol: postgres, cluster: pc}
clusters:
  - {name: tc, endpoints: ["h:1"], health_check: {type: redis}}
  - {name: hc, endpoints: ["h:2"], health_check: {type: http}}
  - {name: rc, endpoints: ["h:3"]}
  - {name: pc, endpoints: ["h:4"], health_check: {type: postgres, user: u}}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.MarshalRedacted()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parse(out, noEnv); err != nil {
		t.Errorf("the rendered config does not load again: %v\n%s", err, out)
	}
}
