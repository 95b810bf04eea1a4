package app

import (
	"encoding/json"
	"io"
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

// zoneBackend is a net/http server answering its name, that can be stopped
// and started again on the same address.
type zoneBackend struct {
	t    *testing.T
	name string
	addr string
	srv  *http.Server
}

func newZoneBackend(t *testing.T, name string) *zoneBackend {
	b := &zoneBackend{t: t, name: name, addr: "127.0.0.1:0"}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *zoneBackend) start() {
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	name := b.name
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })}
	go b.srv.Serve(ln)
}

func (b *zoneBackend) stop() { b.srv.Close() }

// TestZoneAwareSpillsAndReturns: an HTTP and a TCP listener in front of a
// cluster with one endpoint in the pod's zone (from the downward API's
// environment variable) and two in another. Every request goes to the
// local one; when it stops and its health check fails, they spill to the
// other zone; when it is back, they return.
func TestZoneAwareSpillsAndReturns(t *testing.T) {
	t.Parallel()
	a1, b1, b2 := newZoneBackend(t, "a1"), newZoneBackend(t, "b1"), newZoneBackend(t, "b2")
	h := start(t, yamlf(`
zone: {from_env: POD_ZONE}
listeners:
  - {name: web, address: "%s", protocol: http, routes: [{match: {prefix: /}, to: [{cluster: users}]}]}
  - {name: raw, address: "%s", cluster: users}
clusters:
  - name: users
    endpoints: ["%s zone=us-east-1a", "%s zone=us-east-1b", "%s zone=us-east-1b"]
    health_check: {type: http, path: /, interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1}
    zone_aware: {}
`, testenv.FreePort(t), testenv.FreePort(t), a1.addr, b1.addr, b2.addr), map[string]string{"POD_ZONE": "us-east-1a"})
	h.waitReady()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	// answers sends n requests through each listener and counts the
	// backends that answered.
	answers := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for _, l := range []string{"web", "raw"} {
			for range n {
				resp, err := client.Get("http://" + h.addr(l) + "/")
				if err != nil {
					t.Fatalf("GET through %s: %v", l, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got[string(b)]++
			}
		}
		return got
	}
	mode := func() (string, string) {
		_, body := h.admin("GET", "/status")
		var st struct {
			Zone     string
			Clusters []struct {
				ZoneAware *struct {
					Mode      string `json:"mode"`
					SpillOver bool   `json:"spill_over"`
				} `json:"zone_aware"`
				Endpoints []struct{ Address, Zone, State string }
			}
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("/status: %v", err)
		}
		if st.Zone != "us-east-1a" {
			t.Fatalf("/status zone: got %q, want us-east-1a", st.Zone)
		}
		c := st.Clusters[0]
		for _, e := range c.Endpoints {
			if want := map[string]string{a1.addr: "us-east-1a", b1.addr: "us-east-1b", b2.addr: "us-east-1b"}[e.Address]; e.Zone != want {
				t.Errorf("/status endpoint %s zone: got %q, want %q", e.Address, e.Zone, want)
			}
		}
		if c.ZoneAware == nil {
			t.Fatal("/status: no zone_aware for the cluster")
		}
		if c.ZoneAware.SpillOver != (c.ZoneAware.Mode == "spill" || c.ZoneAware.Mode == "split") {
			t.Errorf("/status spill_over %v with mode %s", c.ZoneAware.SpillOver, c.ZoneAware.Mode)
		}
		return c.ZoneAware.Mode, body
	}

	if got := answers(10); got["a1"] != 20 {
		t.Fatalf("with the local endpoint healthy: got %v, want all 20 from a1", got)
	}
	if m, body := mode(); m != "local" {
		t.Fatalf("mode: got %s, want local\n%s", m, body)
	}

	a1.stop()
	eventually(t, 10*time.Second, "spill over", func() bool { m, _ := mode(); return m == "spill" })
	got := answers(10)
	if got["a1"] != 0 || got["b1"] == 0 || got["b2"] == 0 {
		t.Fatalf("with the local endpoint down: got %v, want b1 and b2 only", got)
	}

	a1.start()
	eventually(t, 10*time.Second, "traffic back in the zone", func() bool { m, _ := mode(); return m == "local" })
	if got := answers(10); got["a1"] != 20 {
		t.Fatalf("with the local endpoint back: got %v, want all 20 from a1", got)
	}

	local := h.metric(`attache_cluster_zone_requests_total{cluster="users",locality="local"}`)
	other := h.metric(`attache_cluster_zone_requests_total{cluster="users",locality="other"}`)
	if local != "40" || other != "20" {
		t.Errorf("zone requests: got local %s other %s, want 40 and 20", local, other)
	}
	_, page := h.admin("GET", "/")
	if !strings.Contains(page, "zone us-east-1a") || !strings.Contains(page, "zone routing") {
		t.Errorf("status page shows no zone")
	}
}

// TestZoneFromNodeLabel: the pod's zone is read from its Node (named by
// the downward API's NODE_NAME) through the API server of a kubeconfig,
// here a net/http server answering GET /api/v1/nodes/<name>; a reload to
// a written zone replaces it under the kept cluster.
func TestZoneFromNodeLabel(t *testing.T) {
	t.Parallel()
	var gets atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/nodes/node-3" {
			http.NotFound(w, r)
			return
		}
		gets.Add(1)
		io.WriteString(w, `{"kind":"Node","apiVersion":"v1","metadata":{"name":"node-3","labels":{"topology.kubernetes.io/zone":"eu-west-1c"}}}`)
	}))
	t.Cleanup(api.Close)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\ncurrent-context: ctx\ncontexts:\n- name: ctx\n  context: {cluster: c, user: u}\n"+
		"clusters: [{name: c, cluster: {server: \""+api.URL+"\"}}]\nusers: [{name: u, user: {}}]\n"), 0o600)
	b := newZoneBackend(t, "b")
	listen := testenv.FreePort(t)
	cfg := func(zone string) string {
		return yamlf(`
zone: %s
listeners:
  - {name: raw, address: "%s", cluster: users}
clusters:
  - {name: users, endpoints: ["%s zone=eu-west-1c"], zone_aware: {}}
`, zone, listen, b.addr)
	}
	h := start(t, cfg(`{node_label: topology.kubernetes.io/zone, kubeconfig: "`+kc+`"}`), map[string]string{"NODE_NAME": "node-3"})
	zoneOf := func() string {
		_, body := h.admin("GET", "/status")
		var st struct{ Zone string }
		json.Unmarshal([]byte(body), &st)
		return st.Zone
	}
	eventually(t, 10*time.Second, "zone learned from the node", func() bool { return zoneOf() == "eu-west-1c" })
	if gets.Load() != 1 {
		t.Errorf("node read %d times, want once", gets.Load())
	}
	h.rewrite(cfg(`{name: eu-west-1a}`))
	eventually(t, 10*time.Second, "zone from the reloaded config", func() bool { return zoneOf() == "eu-west-1a" })
}

// TestZoneAwareCallers: with zone_aware.callers naming the cluster of the
// calling service's own pods, their spread sets the split: 3 of 4 callers
// in the pod's zone against 1 of 2 backends there keep 2/3 of the
// requests local and send the rest to the other zone.
func TestZoneAwareCallers(t *testing.T) {
	t.Parallel()
	a1, b1 := newZoneBackend(t, "a1"), newZoneBackend(t, "b1")
	h := start(t, yamlf(`
zone: {name: a}
listeners:
  - {name: web, address: "%s", protocol: http, routes: [{match: {prefix: /}, to: [{cluster: users}]}]}
clusters:
  - {name: users, endpoints: ["%s zone=a", "%s zone=b"], zone_aware: {callers: frontend}}
  - {name: frontend, endpoints: ["10.0.0.1:80 zone=a", "10.0.0.2:80 zone=a", "10.0.0.3:80 zone=a", "10.0.1.1:80 zone=b"]}
`, testenv.FreePort(t), a1.addr, b1.addr), nil)
	h.waitReady()
	_, body := h.admin("GET", "/status")
	var st struct {
		Clusters []struct {
			Name      string
			ZoneAware *struct {
				Mode       string  `json:"mode"`
				LocalShare float64 `json:"local_share"`
				Callers    bool    `json:"callers"`
			} `json:"zone_aware"`
		}
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	za := st.Clusters[0].ZoneAware
	if st.Clusters[0].Name != "users" || za == nil || za.Mode != "split" || !za.Callers || za.LocalShare < 0.66 || za.LocalShare > 0.67 {
		t.Fatalf("/status zone_aware: got %+v, want split by callers with local share 2/3\n%s", za, body)
	}
	got := map[string]int{}
	client := &http.Client{Timeout: 5 * time.Second}
	for range 60 {
		resp, err := client.Get("http://" + h.addr("web") + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got[string(b)]++
	}
	// 1/3 to b1: the chance that 60 requests show none is 3e-11.
	if got["a1"] == 0 || got["b1"] == 0 {
		t.Errorf("got %v, want requests on both", got)
	}
}
