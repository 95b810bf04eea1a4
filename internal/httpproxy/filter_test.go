package httpproxy

import (
	"net/url"
	"path"
	"regexp"
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
		{"/api/v1/namespaces/default/pods/web/log", "localhost", ""},
		{"/api/v1/namespaces/proxy/pods/proxy-1/log", "localhost", ""},
		{"/api/v1/nodes/n1", "localhost", ""},
		// The proxy subresources reach the kubelet and pods with the
		// service account's credentials.
		{"/api/v1/nodes/n1/proxy/exec/default/web/c", "localhost", "path rejected"},
		{"/api/v1/nodes/n1:10250/proxy/pods", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/pods/web/proxy/", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/pods/https:web:8443/proxy/admin", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/services/api:80/proxy/", "localhost", "path rejected"},
		// Spellings of a rejected path: a newline (%0A) that "." did not
		// match, other case, double encoding, dot segments.
		{"/api/v1/namespaces/default/pods/web\n/exec", "localhost", "path rejected"},
		{"/api/v1/namespaces/def\nault/pods/web/exec", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/pods/web/EXEC", "localhost", "path rejected"},
		{"/API/v1/namespaces/default/Pods/web/Exec", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/pods/web%2Fexec", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/pods/web%2fattach", "localhost", "path rejected"},
		{"/api/v1/nodes/n1/%2E%2E/n1/proxy", "localhost", "path rejected"},
		{"/api/v1/namespaces/default/pods/web/./exec", "localhost", "path rejected"},
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
	for _, p := range []string{"/api/v1/namespaces/shop/../kube-system/secrets", "/api/v1/namespaces/shop/%2E%2E/kube-system/secrets", "/api/v1/namespaces/shop/\n"} {
		if got, _ := only.refuse(p, "x"); got != "path rejected" {
			t.Errorf("%q: got %q, want path rejected (outside accept_paths once cleaned)", p, got)
		}
	}
	if got, _ := only.refuse("/api/v1/namespaces/shop/pods/p/exec", "x"); got != "" {
		t.Errorf("reject_paths: [] must reject nothing: got %q", got)
	}
	var none *Filter
	if got, _ := none.refuse("/api/v1/namespaces/default/pods/web/exec", "x"); got != "" {
		t.Errorf("nil filter: got %q, want every request passed", got)
	}
}

// FuzzFilter: no path the default filter passes is, in any of the forms
// the API server could route, an exec, attach, portforward or proxy path.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{"/api/v1/namespaces/default/pods/web/exec", "/api/v1/nodes/n/proxy", "//api/v1/x/../pods/a/attach",
		"/api/v1/namespaces/default/pods/web%2Fexec", "/api/v1/namespaces/d\nx/pods/p/exec", "/apis/apps/v1/deployments"} {
		f.Add(s)
	}
	flt := NewFilter(config.KubernetesAPI{AcceptPaths: config.DefaultKubeAcceptPaths, RejectPaths: config.DefaultKubeRejectPaths,
		AcceptHosts: config.DefaultKubeAcceptHosts})
	bad := regexp.MustCompile(`(?is)^/api/.*/(pods/.*/(exec|attach|portforward|proxy)|(nodes|services)/.*/proxy)`)
	f.Fuzz(func(t *testing.T, p string) {
		if reason, _ := flt.refuse(p, "localhost"); reason != "" {
			return
		}
		forms := []string{p, path.Clean("/" + p)}
		if u, err := url.PathUnescape(p); err == nil {
			forms = append(forms, u, path.Clean("/"+u))
		}
		for _, s := range forms {
			if bad.MatchString(s) {
				t.Fatalf("%q passed, and its form %q is a rejected path", p, s)
			}
		}
	})
}
