package kubernetes

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// TestKubeconfigAsClientcmd reads kubeconfig files with loadKubeconfig and
// with client-go's clientcmd (linked by this test only) and wants the same
// REST configuration from both, or an error from both.
func TestKubeconfigAsClientcmd(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"ca.crt": "CA", "token": "file-token\n", "c.crt": "C", "c.key": "K"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	head := "apiVersion: v1\nkind: Config\ncurrent-context: ctx\ncontexts:\n- name: ctx\n  context: {cluster: c, user: u, namespace: ns}\n"
	cases := map[string]struct {
		body    string
		wantErr bool
	}{
		"relative CA file, inline token": {body: head + `clusters: [{name: c, cluster: {server: "https://10.0.0.1:6443", certificate-authority: ca.crt}}]
users: [{name: u, user: {token: abc}}]
`},
		"data fields, client certificate": {body: head + `clusters: [{name: c, cluster: {server: "https://k.example:443", certificate-authority-data: ` + b64("CAdata") + `}}]
users: [{name: u, user: {client-certificate-data: ` + b64("cert") + `, client-key-data: ` + b64("key") + `}}]
`},
		"client certificate files, token file": {body: head + `clusters: [{name: c, cluster: {server: "https://k.example", certificate-authority: ` + filepath.Join(dir, "ca.crt") + `}}]
users: [{name: u, user: {client-certificate: c.crt, client-key: c.key, tokenFile: token}}]
`},
		"TLS name, insecure, proxy, no compression, path trimmed": {body: head + `clusters: [{name: c, cluster: {server: "https://k.example:6443/prefix?x=1#f", tls-server-name: api.k, insecure-skip-tls-verify: true, proxy-url: "http://proxy.example:3128", disable-compression: true}}]
users: [{name: u, user: {username: admin, password: secret}}]
`},
		"exec plugin with a relative command": {body: head + `clusters: [{name: c, cluster: {server: "https://k.example"}}]
users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: ./bin/get-token
      args: [--cluster, c]
      env: [{name: REGION, value: eu}]
      installHint: install get-token
      provideClusterInfo: true
`},
		"exec plugin found in PATH": {body: head + `clusters: [{name: c, cluster: {server: "https://k.example"}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: aws, interactiveMode: Never}}}]
`},
		"plain HTTP: no credentials sent": {body: head + `clusters: [{name: c, cluster: {server: "http://127.0.0.1:8080"}}]
users: [{name: u, user: {token: abc}}]
`},
		"JSON": {body: `{"apiVersion": "v1", "current-context": "ctx", "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
"clusters": [{"name": "c", "cluster": {"server": "https://k.example"}}], "users": [{"name": "u", "user": {"token": "t"}}]}`},
		"exec v1 without interactiveMode": {body: head + `clusters: [{name: c, cluster: {server: "https://k.example"}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}}}]
`, wantErr: true},
		"token file missing": {body: head + `clusters: [{name: c, cluster: {server: "https://k.example"}}]
users: [{name: u, user: {tokenFile: nonexistent}}]
`, wantErr: true},
		"context missing": {body: strings.Replace(head, "- name: ctx", "- name: other", 1) + `clusters: [{name: c, cluster: {server: "https://k.example"}}]
`, wantErr: true},
		"cluster missing": {body: head + `clusters: [{name: d, cluster: {server: "https://k.example"}}]
users: [{name: u, user: {token: abc}}]
`, wantErr: true},
		"no server": {body: head + `clusters: [{name: c, cluster: {certificate-authority: ca.crt}}]
users: [{name: u, user: {token: abc}}]
`, wantErr: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".kubeconfig")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := loadKubeconfig(path)
			want, werr := clientcmd.BuildConfigFromFlags("", path)
			if tc.wantErr {
				if err == nil || werr == nil {
					t.Fatalf("errors: loadKubeconfig %v, clientcmd %v; want both", err, werr)
				}
				return
			}
			if err != nil || werr != nil {
				t.Fatalf("errors: loadKubeconfig %v, clientcmd %v", err, werr)
			}
			compareREST(t, got, want)
		})
	}
}

func compareREST(t *testing.T, got, want *rest.Config) {
	t.Helper()
	type fields struct {
		Host, BearerToken, BearerTokenFile, Username, Password string
		TLS                                                    rest.TLSClientConfig
		DisableCompression                                     bool
		Proxy                                                  string
	}
	f := func(c *rest.Config) fields {
		v := fields{Host: c.Host, BearerToken: c.BearerToken, BearerTokenFile: c.BearerTokenFile, Username: c.Username,
			Password: c.Password, TLS: c.TLSClientConfig, DisableCompression: c.DisableCompression}
		if c.Proxy != nil {
			req, _ := http.NewRequest("GET", "https://k.example/", nil)
			u, err := c.Proxy(req)
			v.Proxy = u.String() + " " + errString(err)
		}
		return v
	}
	if g, w := f(got), f(want); !reflect.DeepEqual(g, w) {
		t.Errorf("REST configuration:\n got  %+v\n want %+v (clientcmd)", g, w)
	}
	switch {
	case (got.ExecProvider == nil) != (want.ExecProvider == nil):
		t.Errorf("exec provider: got %+v, want %+v (clientcmd)", got.ExecProvider, want.ExecProvider)
	case got.ExecProvider != nil:
		g, w := *got.ExecProvider, *want.ExecProvider
		g.Config, w.Config = nil, nil // the cluster's exec extension: not read
		if !reflect.DeepEqual(g, w) {
			t.Errorf("exec provider:\n got  %+v\n want %+v (clientcmd)", g, w)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
