package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCredentialsAndKubernetesAPI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	token := write("token", "s3cr3t\n")
	empty := write("empty", "\n")
	inner := write("inner", "a\nb\n")
	ca := write("ca.crt", "not checked here")
	missing := filepath.Join(dir, "missing")
	const httpL = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, cluster: c}]\n"
	const tcpL = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	kube := func(extra string) string {
		return httpL + "clusters: [{name: c, kubernetes_api: {token_file: " + token + ", ca_file: " + ca + extra + "}}]"
	}
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "API_KEY": "k3y"}
	withEnv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	for _, tc := range []struct{ name, yaml, want string }{
		{"missing token file", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {bearer_token_file: " + missing + "}}]",
			`clusters[0].credentials.bearer_token_file: no such file "` + missing + `" (line 2)`},
		{"empty token file", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {bearer_token_file: " + empty + "}}]",
			`clusters[0].credentials.bearer_token_file: file "` + empty + `" is empty (line 2)`},
		{"line break inside", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {bearer_token_file: " + inner + "}}]",
			"clusters[0].credentials.bearer_token_file: file \"" + inner + "\" holds a line break"},
		{"missing password file", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {basic: {username: u, password_file: " + missing + "}}}]",
			`clusters[0].credentials.basic.password_file: no such file "` + missing + `" (line 2)`},
		{"basic needs user", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {basic: {password_file: " + token + "}}}]",
			"clusters[0].credentials.basic.username: required (line 2)"},
		{"basic colon", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {basic: {username: \"a:b\", password_file: " + token + "}}}]",
			"clusters[0].credentials.basic.username: must not contain ':'"},
		{"bearer and basic", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {bearer_token_file: " + token + ", basic: {username: u, password_file: " + token + "}}}]",
			"clusters[0].credentials.basic: give bearer_token_file or basic, not both"},
		{"empty credentials", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {}}]",
			"clusters[0].credentials: needs bearer_token_file, basic or headers (line 2)"},
		{"authorization twice", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {bearer_token_file: " + token + ", headers: {authorization: x}}}]",
			"clusters[0].credentials.headers.authorization: Authorization is already set by bearer_token_file or basic (line 2)"},
		{"host header", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {headers: {Host: x}}}]",
			"clusters[0].credentials.headers.Host: Host cannot be set as a credential"},
		{"bad header name", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {headers: {\"a b\": x}}}]",
			"clusters[0].credentials.headers.a b: invalid header name"},
		{"unset header env", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {headers: {X-Api-Key: \"${NOPE}\"}}}]",
			"clusters[0].credentials.headers.X-Api-Key: environment variable NOPE is not set (line 2)"},
		{"unknown field", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {bearer_tokn_file: x}}]",
			`clusters[0].credentials.bearer_tokn_file: unknown field (line 2); did you mean "bearer_token_file"?`},
		{"tcp listener", tcpL + "clusters: [{name: c, endpoints: [\"h:1\"], credentials: {bearer_token_file: " + token + "}}]",
			`clusters[0].credentials: only for HTTP: listener "l" (protocol tcp) uses this cluster (line 2)`},
		{"kube on tcp", tcpL + "clusters: [{name: c, kubernetes_api: {token_file: " + token + ", ca_file: " + ca + "}}]",
			`clusters[0].kubernetes_api: only for HTTP: listener "l" (protocol tcp) uses this cluster`},
		{"kube with endpoints", httpL + "clusters: [{name: c, endpoints: [\"h:1\"], kubernetes_api: {token_file: " + token + ", ca_file: " + ca + "}}]",
			"clusters[0].endpoints: comes from kubernetes_api; remove it"},
		{"kube with credentials", httpL + "clusters: [{name: c, credentials: {bearer_token_file: " + token + "}, kubernetes_api: {token_file: " + token + ", ca_file: " + ca + "}}]",
			"clusters[0].credentials: comes from kubernetes_api; remove it"},
		{"kube missing token", httpL + "clusters: [{name: c, kubernetes_api: {token_file: " + missing + ", ca_file: " + ca + "}}]",
			`clusters[0].kubernetes_api.token_file: no such file "` + missing + `" (the service-account token is mounted there unless automountServiceAccountToken is false) (line 2)`},
		{"kube default token", httpL + "clusters: [{name: c, kubernetes_api: {ca_file: " + ca + "}}]",
			`clusters[0].kubernetes_api.token_file: no such file "/var/run/secrets/kubernetes.io/serviceaccount/token"`},
		{"kube missing ca", httpL + "clusters: [{name: c, kubernetes_api: {token_file: " + token + ", ca_file: " + missing + "}}]",
			`clusters[0].kubernetes_api.ca_file: no such file "` + missing + `" (line 2)`},
		{"kube bad regex", kube(", reject_paths: [\"(\"]"), "clusters[0].kubernetes_api.reject_paths[0]: error parsing regexp"},
		{"kube accept nothing", kube(", accept_paths: []"), "clusters[0].kubernetes_api.accept_paths: must not be empty"},
		{"kube port", kube(", port: 70000"), "clusters[0].kubernetes_api.port: must be 1-65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), withEnv)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error %q shows a file's content", err)
			}
		})
	}

	t.Run("no env", func(t *testing.T) {
		t.Parallel()
		_, err := parse([]byte(kube("")), noEnv)
		for _, want := range []string{
			"clusters[0].kubernetes_api.host: KUBERNETES_SERVICE_HOST is not set (is attache running in a pod?); set host and port (line 2)",
			"clusters[0].kubernetes_api.port: KUBERNETES_SERVICE_PORT is not set",
		} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v, want it to contain %q", err, want)
			}
		}
		if err != nil && strings.Contains(err.Error(), "needs endpoints") {
			t.Errorf("got %q: the missing endpoint is reported twice", err)
		}
	})

	t.Run("bad port env", func(t *testing.T) {
		t.Parallel()
		_, err := parse([]byte(kube("")), func(k string) (string, bool) {
			return map[string]string{"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "https"}[k], true
		})
		if want := `clusters[0].kubernetes_api.port: KUBERNETES_SERVICE_PORT "https" is not a port number`; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	})

	t.Run("kube expands", func(t *testing.T) {
		t.Parallel()
		c, err := parse([]byte(kube("")), withEnv)
		if err != nil {
			t.Fatal(err)
		}
		cl := c.Clusters[0]
		k := cl.KubernetesAPI
		for _, tc := range []struct {
			name      string
			got, want any
		}{
			{"endpoint", cl.Endpoints[0].Address, "10.96.0.1:443"},
			{"ca", cl.TLS.CAFile, ca},
			{"token", cl.Credentials.BearerTokenFile, token},
			{"reject", strings.Join(k.RejectPaths, ","), `^/api/.*/pods/.*/exec,^/api/.*/pods/.*/attach,^/api/.*/pods/.*/portforward,^/api/.*/nodes/.*/proxy,^/api/.*/pods/.*/proxy,^/api/.*/services/.*/proxy`},
			{"accept", strings.Join(k.AcceptPaths, ","), `^.*`},
			{"hosts", strings.Join(k.AcceptHosts, ","), `^localhost$,^127\.0\.0\.1$,^\[::1\]$`},
		} {
			if tc.got != tc.want {
				t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
			}
		}
	})

	t.Run("kube ipv6 and override", func(t *testing.T) {
		t.Parallel()
		v6 := func(k string) (string, bool) {
			return map[string]string{"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"}[k], true
		}
		c, err := parse([]byte(kube("")), v6)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Clusters[0].Endpoints[0].Address, "[fd00:10:96::1]:443"; got != want {
			t.Errorf("got %s, want %s", got, want)
		}
		c, err = parse([]byte(kube(", host: \"[::1]\", port: 6443, reject_paths: []")), noEnv)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Clusters[0].Endpoints[0].Address, "[::1]:6443"; got != want {
			t.Errorf("got %s, want %s", got, want)
		}
		if n := len(c.Clusters[0].KubernetesAPI.RejectPaths); n != 0 {
			t.Errorf("reject_paths: []: got %d patterns, want none", n)
		}
	})

	t.Run("redacted", func(t *testing.T) {
		t.Parallel()
		c, err := parse([]byte(httpL+"clusters: [{name: c, endpoints: [\"h:1\"], credentials: {bearer_token_file: "+token+", headers: {X-Api-Key: \"${API_KEY}\"}}}]"), withEnv)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Clusters[0].Credentials.Headers["X-Api-Key"]; got != "k3y" {
			t.Errorf("header: got %q, want k3y", got)
		}
		out, err := c.MarshalRedacted()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "k3y") || !strings.Contains(string(out), "X-Api-Key: "+Redacted) {
			t.Errorf("dump shows the header value or lost its name:\n%s", out)
		}
	})
}
