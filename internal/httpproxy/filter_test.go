package httpproxy

import (
	"testing"

	"github.com/attache-proxy/attache/internal/config"
)

func TestFilterDefaults(t *testing.T) {
	t.Parallel()
	f := NewFilter(config.KubernetesAPI{AcceptPaths: config.DefaultKubeAcceptPaths, RejectPaths: config.DefaultKubeRejectPaths,
		AcceptHosts: config.DefaultKubeAcceptHosts})
	for _, tc := range []struct{ path, host, want string }{
		{"/api/v1/namespaces/default/pods", "localhost:8001", ""},
		{"/api/v1/namespaces/default/pods", "127.0.0.1:8001", ""},
		{"/api/v1/namespaces/default/pods", "[::1]:8001", ""},
		{"/api/v1/namespaces/default/pods", "localhost", ""},
		{"/apis/apps/v1/deployments", "localhost", ""},
		{"/api/v1/namespaces/default/pods/web/log", "localhost", ""},
		{"/api/v1/namespaces/default/pods/web/exec", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/pods/web/attach", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/pods/web/portforward", "localhost", "path rejected"},
		{"//api/v1/namespaces/default/pods/web/exec", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/pods/a/../web/exec", "localhost", "path rejected"},
		{"/api/v1/pods", "evil.example", "host rejected"},
		{"/api/v1/pods", "localhost.evil.example:8001", "host rejected"},
		{"/api/v1/pods", "10.0.0.1:8001", "host rejected"},
	} {
		if got, _ := f.refuse(tc.path, tc.host); got != tc.want {
			t.Errorf("%s Host %s: got %q, want %q", tc.path, tc.host, got, tc.want)
		}
	}
	only := NewFilter(config.KubernetesAPI{AcceptPaths: []string{`^/api/v1/namespaces/shop/`}, AcceptHosts: []string{`.*`}})
	if got, _ := only.refuse("/api/v1/namespaces/kube-system/secrets", "x"); got != "path rejected" {
		t.Errorf("outside accept_paths: got %q, want path rejected", got)
	}
	if got, _ := only.refuse("/api/v1/namespaces/shop/pods/p/exec", "x"); got != "" {
		t.Errorf("reject_paths: [] must reject nothing: got %q", got)
	}
	var none *Filter
	if got, _ := none.refuse("/api/v1/namespaces/default/pods/web/exec", "x"); got != "" {
		t.Errorf("nil filter: got %q, want every request passed", got)
	}
}
