package app

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// authBackend records the Authorization and X-Api-Key headers of the last
// request it got.
type authBackend struct {
	auth, key atomic.Value
	hits      atomic.Int64
}

func (b *authBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	b.auth.Store(r.Header.Get("Authorization"))
	b.key.Store(r.Header.Get("X-Api-Key"))
	// Every value the app sent for a header must be gone, not only the
	// first.
	if n := len(r.Header.Values("Authorization")); n != 1 {
		w.WriteHeader(http.StatusBadRequest)
	}
}

func (b *authBackend) last() (auth, key string) {
	a, _ := b.auth.Load().(string)
	k, _ := b.key.Load().(string)
	return a, k
}

// tlsHTTPServer starts an HTTPS server (HTTP/2 and 1.1) with a certificate
// for 127.0.0.1 from its own CA, and returns its address and the CA file.
func tlsHTTPServer(t *testing.T, h http.Handler) (addr, caFile string) {
	t.Helper()
	return tlsHTTPServerOn(t, "127.0.0.1", h)
}

// tlsHTTPServerOn is tlsHTTPServer on the loopback address ip.
func tlsHTTPServerOn(t *testing.T, ip string, h http.Handler) (addr, caFile string) {
	t.Helper()
	dir := t.TempDir()
	caFile, crt, key := testenv.NewCA(t, "test-ca").Files(t, dir, ip)
	cert, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Skipf("no loopback %s: %v", ip, err)
	}
	srv.Listener.Close()
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), caFile
}

// kubeSecretDir writes files the way the kubelet updates a projected
// volume: into a new timestamped directory, then an atomic swap of the
// ..data symlink; the files themselves are symlinks through ..data.
func kubeSecretDir(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	ts := filepath.Join(dir, "..ts-"+time.Now().Format("150405.000000000"))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err != nil {
			os.Symlink(filepath.Join("..data", name), link)
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPCredentials: a bearer token (rewritten in place, and rotated by a
// ..data symlink swap), Basic auth and fixed headers reach the upstream,
// over TLS (net/http path) and cleartext (fast path), replacing the app's
// own Authorization; a token file that disappears keeps its last value;
// no credential shows in logs, /config or /status.
func TestHTTPCredentials(t *testing.T) {
	t.Parallel()
	tlsB, plainB, basicB := &authBackend{}, &authBackend{}, &authBackend{}
	tlsAddr, caFile := tlsHTTPServer(t, tlsB)
	plainSrv := httptest.NewServer(plainB)
	t.Cleanup(plainSrv.Close)
	basicSrv := httptest.NewServer(basicB)
	t.Cleanup(basicSrv.Close)

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("token-one-a1\n"), 0o600)
	saDir := filepath.Join(dir, "sa")
	os.Mkdir(saDir, 0o755)
	kubeSecretDir(t, saDir, map[string]string{"token": "sa-token-one-b1"})
	pwFile := filepath.Join(dir, "password")
	os.WriteFile(pwFile, []byte("pa55word-c1\n"), 0o600)

	h := start(t, yamlf(`
listeners:
  - name: l
    address: "127.0.0.1:0"
    protocol: http
    routes:
      - {match: {prefix: /tls/}, to: [{cluster: tls}]}
      - {match: {prefix: /plain/}, to: [{cluster: plain}]}
      - {match: {prefix: /basic/}, to: [{cluster: basic}]}
clusters:
  - name: tls
    endpoints: ["%s"]
    tls: {ca_file: "%s"}
    credentials: {bearer_token_file: "%s", headers: {X-Api-Key: "${API_KEY}"}}
  - name: plain
    endpoints: ["%s"]
    credentials: {bearer_token_file: "%s/token"}
  - name: basic
    endpoints: ["%s"]
    credentials: {basic: {username: app, password_file: "%s"}}
`, tlsAddr, caFile, tokenFile, plainSrv.Listener.Addr(), saDir, basicSrv.Listener.Addr(), pwFile),
		map[string]string{"API_KEY": "api-key-d1"})
	base := "http://" + h.addr("l")
	client := &http.Client{}
	get := func(path string) {
		t.Helper()
		// The app sends its own Authorization, twice, in two spellings.
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header["Authorization"] = []string{"Bearer app-own-token"}
		req.Header["authorization"] = []string{"Basic YXBwOm93bg=="}
		req.Header.Set("X-Api-Key", "app-own-key")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: status %d, want 200", path, resp.StatusCode)
		}
	}

	get("/tls/x")
	if a, k := tlsB.last(); a != "Bearer token-one-a1" || k != "api-key-d1" {
		t.Errorf("tls: got Authorization %q, X-Api-Key %q; want attache's token and key", a, k)
	}
	get("/plain/x")
	if a, _ := plainB.last(); a != "Bearer sa-token-one-b1" {
		t.Errorf("plain: got Authorization %q, want the service-account token", a)
	}
	get("/basic/x")
	if a, _ := basicB.last(); a != "Basic "+base64.StdEncoding.EncodeToString([]byte("app:pa55word-c1")) {
		t.Errorf("basic: got Authorization %q, want app:pa55word-c1", a)
	}

	// Rotation: rewritten in place, and by the kubelet's symlink swap.
	os.WriteFile(tokenFile, []byte("token-two-a2\n"), 0o600)
	kubeSecretDir(t, saDir, map[string]string{"token": "sa-token-two-b2"})
	os.WriteFile(pwFile, []byte("pa55word-c2"), 0o600)
	eventually(t, 15*time.Second, "rotated credentials", func() bool {
		get("/tls/x")
		get("/plain/x")
		get("/basic/x")
		a1, _ := tlsB.last()
		a2, _ := plainB.last()
		a3, _ := basicB.last()
		return a1 == "Bearer token-two-a2" && a2 == "Bearer sa-token-two-b2" &&
			a3 == "Basic "+base64.StdEncoding.EncodeToString([]byte("app:pa55word-c2"))
	})

	// A token file that disappears keeps its last value, and is counted.
	os.Remove(tokenFile)
	eventually(t, 15*time.Second, "the credential reload error", func() bool {
		return h.metric(`attache_credential_reload_errors_total{cluster="tls"}`) == "1"
	})
	get("/tls/x")
	if a, _ := tlsB.last(); a != "Bearer token-two-a2" {
		t.Errorf("after the file went: got %q, want the last token kept", a)
	}
	os.WriteFile(tokenFile, []byte("token-three-a3"), 0o600)
	eventually(t, 15*time.Second, "the token file back", func() bool {
		get("/tls/x")
		a, _ := tlsB.last()
		return a == "Bearer token-three-a3"
	})

	_, cfg := h.admin("GET", "/config")
	_, status := h.admin("GET", "/status")
	for where, text := range map[string]string{"logs": h.logs.String(), "/config": cfg, "/status": status} {
		for _, secret := range []string{"token-one", "token-two", "token-three", "sa-token", "pa55word", "api-key-d1", "YXBwOnBhNTV3b3Jk"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows %q", where, secret)
			}
		}
	}
	if !strings.Contains(cfg, "X-Api-Key: <redacted>") {
		t.Errorf("/config: want the header name with its value redacted:\n%s", cfg)
	}
}

// TestKubernetesAPIAmbassador runs a kubernetes_api cluster against an
// HTTPS stand-in for the API server found through the injected
// KUBERNETES_SERVICE_HOST/PORT: the token goes as a bearer token, exec,
// attach, portforward and proxy (in any spelling) and foreign Host headers are refused by attache
// itself, and a watch streams past the route timeout.
func TestKubernetesAPIAmbassador(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	var lastAuth atomic.Value
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		lastAuth.Store(r.Header.Get("Authorization"))
		if r.URL.Query().Get("watch") == "1" {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"type":"ADDED","object":{"n":1}}` + "\n"))
			w.(http.Flusher).Flush()
			select { // the second event only after the client saw the first
			case <-release:
			case <-r.Context().Done():
				return
			}
			w.Write([]byte(`{"type":"ADDED","object":{"n":2}}` + "\n"))
			return
		}
		w.Write([]byte(`{"kind":"PodList"}`))
	})
	addr, caFile := tlsHTTPServer(t, mux)
	host, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte("sa-token-k1\n"), 0o600)

	h := start(t, yamlf(`
listeners:
  - {name: kube, address: "127.0.0.1:0", protocol: http, routes: [{match: {prefix: /}, to: [{cluster: kube-api}], timeout: 500ms}]}
clusters:
  - name: kube-api
    kubernetes_api: {token_file: "%s/token", ca_file: "%s"}
`, dir, caFile), map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port})
	base := "http://" + h.addr("kube")
	_, lport, _ := net.SplitHostPort(h.addr("kube"))

	resp, body := httpGet(t, &http.Client{}, base+"/api/v1/namespaces/default/pods", map[string]string{"Authorization": "Bearer app"})
	if resp.StatusCode != 200 || body != `{"kind":"PodList"}` || lastAuth.Load() != "Bearer sa-token-k1" {
		t.Fatalf("list pods: got %d %q with Authorization %q", resp.StatusCode, body, lastAuth.Load())
	}

	before := hits.Load()
	for _, p := range []string{
		"/api/v1/namespaces/default/pods/web-1/exec?command=sh",
		"/api/v1/namespaces/default/pods/web-1/attach",
		"/api/v1/namespaces/default/pods/web-1/portforward",
		"//api/v1/namespaces/default/pods/web-1/exec",
		"/api/v1/namespaces/default/pods/x/../web-1/exec",
		// Encoded spellings, and the proxy subresources.
		"/api/v1/namespaces/default/pods/web-1%2Fexec",
		"/api/v1/namespaces/default/pods/web-1/%65xec",
		"/api/v1/namespaces/default/pods/web-1%252Fexec",
		"/api/v1/namespaces/def%0Aault/pods/web-1/exec",
		"/api/v1/namespaces/default/pods/web-1/EXEC",
		"/api/v1/nodes/n1/proxy/run/default/web-1/c",
		"/api/v1/namespaces/default/pods/web-1/proxy/",
		"/api/v1/namespaces/default/services/api:80/proxy/",
	} {
		resp, body := httpGet(t, &http.Client{}, base+p, nil)
		if resp.StatusCode != 403 || resp.Header.Get("X-Attache-Reason") != "path rejected" {
			t.Errorf("%s: got %d %q (reason %q), want 403 path rejected from attache", p, resp.StatusCode, body, resp.Header.Get("X-Attache-Reason"))
		}
	}
	req, _ := http.NewRequest("GET", base+"/api/v1/pods", nil)
	req.Host = "evil.example:" + lport // a DNS-rebinding page's Host
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 || resp.Header.Get("X-Attache-Reason") != "host rejected" {
		t.Errorf("foreign Host: got %v %v, want 403 host rejected", resp, err)
	}
	if n := hits.Load() - before; n != 0 {
		t.Errorf("%d refused requests reached the API server", n)
	}

	// The watch outlives the 500ms route timeout: it runs until response
	// headers only.
	resp, err := http.Get(base + "/api/v1/namespaces/default/pods?watch=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, `"n":1`) {
		t.Fatalf("first watch event: got %q, %v", line, err)
	}
	time.Sleep(time.Second)
	close(release)
	line, err = br.ReadString('\n')
	if err != nil || !strings.Contains(line, `"n":2`) {
		t.Fatalf("second watch event after the route timeout: got %q, %v", line, err)
	}
}

// TestKubernetesAPIOverIPv6: an IPv6 KUBERNETES_SERVICE_HOST is bracketed
// in the endpoint and in the Host header, and verified against the
// certificate's IP address.
func TestKubernetesAPIOverIPv6(t *testing.T) {
	t.Parallel()
	var host atomic.Value
	addr, caFile := tlsHTTPServerOn(t, "::1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host + " " + r.Header.Get("Authorization"))
	}))
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte("sa-token-v6"), 0o600)
	h := start(t, yamlf(`
listeners: [{name: kube, address: "127.0.0.1:0", protocol: http, cluster: kube-api}]
clusters: [{name: kube-api, kubernetes_api: {token_file: "%s/token", ca_file: "%s"}}]
`, dir, caFile), map[string]string{"KUBERNETES_SERVICE_HOST": "::1", "KUBERNETES_SERVICE_PORT": port})
	if resp, body := httpGet(t, &http.Client{}, "http://"+h.addr("kube")+"/api", nil); resp.StatusCode != 200 {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if got, want := host.Load(), "[::1]:"+port+" Bearer sa-token-v6"; got != want {
		t.Errorf("API server saw %q, want %q", got, want)
	}
}
