package app

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// clusterStatus returns a cluster's entry of /status.
func (h *harness) clusterStatus(name string) ClusterStatus {
	h.t.Helper()
	_, body := h.admin("GET", "/status")
	var s Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		h.t.Fatalf("/status: %v", err)
	}
	for _, c := range s.Clusters {
		if c.Name == name {
			return c
		}
	}
	h.t.Fatalf("/status has no cluster %q", name)
	return ClusterStatus{}
}

// endpointStates maps a cluster's endpoint addresses to their state.
func (h *harness) endpointStates(cluster string) map[string]string {
	m := map[string]string{}
	for _, e := range h.clusterStatus(cluster).Endpoints {
		m[e.Address] = e.State
	}
	return m
}

// waitEndpoints waits until the cluster's endpoints are exactly addrs.
func (h *harness) waitEndpoints(cluster string, within time.Duration, addrs ...string) {
	h.t.Helper()
	slices.Sort(addrs)
	var got []string
	deadline := time.Now().Add(within)
	for {
		got = got[:0]
		for a := range h.endpointStates(cluster) {
			got = append(got, a)
		}
		slices.Sort(got)
		if slices.Equal(got, addrs) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("cluster %q: endpoints %v after %v, want %v", cluster, got, within, addrs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// conn is a client connection through attache that stays open.
type conn struct {
	t *testing.T
	c net.Conn
}

func dialThrough(t *testing.T, addr string) *conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn{t: t, c: c}
}

// ask sends msg and returns the echo server's reply.
func (c *conn) ask(msg string) string {
	c.t.Helper()
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Write([]byte(msg)); err != nil {
		c.t.Fatalf("write on the open connection: %v", err)
	}
	buf := make([]byte, 4096)
	n, err := c.c.Read(buf)
	if err != nil {
		c.t.Fatalf("read on the open connection: %v", err)
	}
	return string(buf[:n])
}

// TestFileDiscovery: the endpoints follow a watched file; an update leaves
// open connections and the health of the endpoints that remain alone; a bad
// file keeps the last good set, says so on /ready and in metrics, and does
// not fail readiness.
func TestFileDiscovery(t *testing.T) {
	a, _ := echoServer(t, "a")
	b, _ := echoServer(t, "b")
	file := filepath.Join(t.TempDir(), "partners.yaml")
	os.WriteFile(file, []byte("- "+a+"\n"), 0o644)
	// One round at start and then none for an hour: an endpoint that
	// kept its state stays healthy, and a new one is healthy only because
	// it is checked on arrival.
	h := start(t, yamlf(`
listeners: [{name: p, address: "127.0.0.1:0", cluster: partners}]
clusters:
  - name: partners
    discovery: {file: {path: %s}}
    health_check: {interval: 1h, healthy_threshold: 1}
`, file), nil)
	h.waitReady()
	open := dialThrough(t, h.addr("p"))
	if got := open.ask("1"); got != "a:1" {
		t.Fatalf("got %q, want a:1", got)
	}

	os.WriteFile(file, []byte("- "+a+"\n- "+b+" weight=2\n"), 0o644)
	h.waitEndpoints("partners", 10*time.Second, a, b)
	eventually(t, 10*time.Second, "the added endpoint checked on arrival", func() bool {
		return h.endpointStates("partners")[b] == "healthy"
	})
	if states := h.endpointStates("partners"); states[a] != "healthy" {
		t.Errorf("after the update: got %v, want %s healthy (its state kept by address)", states, a)
	}
	if got := open.ask("2"); got != "a:2" {
		t.Errorf("the open connection after the update: got %q, want a:2", got)
	}

	os.WriteFile(file, []byte("- "+a+"\n- "+b+":x\n"), 0o644)
	eventually(t, 10*time.Second, "the stale note on /ready", func() bool {
		code, body := h.admin("GET", "/ready")
		return code == 200 && strings.Contains(body, `cluster "partners": file discovery failing since`) &&
			strings.Contains(body, file+":2: ") && strings.Contains(body, "serving the 2 last known endpoints")
	})
	if got := h.metric(`attache_discovery_stale{cluster="partners",source="file"}`); got != "1" {
		t.Errorf("attache_discovery_stale: got %q, want 1", got)
	}
	if got := h.metric(`attache_discovery_errors_total{cluster="partners",source="file"}`); got == "" || got == "0" {
		t.Errorf("attache_discovery_errors_total: got %q, want at least 1", got)
	}
	if n := len(h.endpointStates("partners")); n != 2 {
		t.Errorf("endpoints while the file is bad: got %d, want the last good 2", n)
	}

	os.WriteFile(file, []byte("- "+b+"\n"), 0o644)
	h.waitEndpoints("partners", 10*time.Second, b)
	if got := h.metric(`attache_discovery_stale{cluster="partners",source="file"}`); got != "0" {
		t.Errorf("attache_discovery_stale after the fix: got %q, want 0", got)
	}
	if got := open.ask("3"); got != "a:3" {
		t.Errorf("the connection to the removed endpoint: got %q, want a:3 (left open)", got)
	}
}

const consulReadToken = "0b5b1d5e-6f3a-4f61-9d7e-5b9a8e2f7c11"

// TestConsulDiscovery runs against a real Consul dev agent: only passing
// instances with the tag reach attache; a TTL check change wakes the
// blocking query; an agent restart (its index back near zero) is followed;
// a stopped agent leaves the last endpoints serving, with the stale state on
// /ready and in metrics.
func TestConsulDiscovery(t *testing.T) {
	agent := testenv.Consul(t)
	agent.ReadToken("orders", consulReadToken)
	a, _ := echoServer(t, "a")
	b, _ := echoServer(t, "b")
	c, _ := echoServer(t, "c")
	agent.Register("orders", "orders-a", a, "v2")
	agent.Register("orders", "orders-b", b, "v2")
	agent.Register("orders", "orders-c", c, "v1")
	agent.PassTTL("orders-a")
	agent.PassTTL("orders-c") // passing, but not tagged v2

	h := start(t, yamlf(`
listeners: [{name: orders, address: "127.0.0.1:0", cluster: orders}]
clusters:
  - name: orders
    discovery: {consul: {address: %s, service: orders, tag: v2, datacenter: dc1, token: "${CONSUL_HTTP_TOKEN}"}}
`, agent.Addr), map[string]string{"CONSUL_HTTP_TOKEN": consulReadToken})
	h.waitEndpoints("orders", 10*time.Second, a)
	h.waitReady()
	open := dialThrough(t, h.addr("orders"))
	if got := open.ask("1"); got != "a:1" {
		t.Fatalf("got %q, want a:1", got)
	}

	// attache is blocked on the index; passing b's check wakes it.
	agent.PassTTL("orders-b")
	h.waitEndpoints("orders", 15*time.Second, a, b)
	if got := open.ask("2"); got != "a:2" {
		t.Errorf("the open connection after the update: got %q, want a:2", got)
	}
	agent.FailTTL("orders-a")
	h.waitEndpoints("orders", 15*time.Second, b)
	if got, _ := ask(h.addr("orders"), "3"); got != "b:3" {
		t.Errorf("a new connection: got %q, want b:3", got)
	}

	// Raise the index well above what a fresh agent starts with, then
	// restart the agent: attache must not wait on the old index.
	for range 20 {
		agent.PassTTL("orders-c")
		agent.FailTTL("orders-c")
	}
	before, _ := strconv.Atoi(agent.Index("orders"))
	agent.Restart()
	agent.ReadToken("orders", consulReadToken)
	agent.Register("orders", "orders-c2", c, "v2")
	agent.PassTTL("orders-c2")
	if after, _ := strconv.Atoi(agent.Index("orders")); after >= before {
		t.Fatalf("premise: the restarted agent's index %d is not below %d", after, before)
	}
	h.waitEndpoints("orders", 30*time.Second, c)
	if got, _ := ask(h.addr("orders"), "4"); got != "c:4" {
		t.Errorf("after the restart: got %q, want c:4", got)
	}

	// Consul gone: the last endpoints keep serving, and it shows.
	agent.Stop()
	eventually(t, 15*time.Second, "the stale note on /ready", func() bool {
		code, body := h.admin("GET", "/ready")
		return code == 200 && strings.Contains(body, `cluster "orders": consul discovery failing since`) &&
			strings.Contains(body, "serving the 1 last known endpoints")
	})
	if got := h.metric(`attache_discovery_stale{cluster="orders",source="consul"}`); got != "1" {
		t.Errorf("attache_discovery_stale: got %q, want 1", got)
	}
	if got := h.metric(`attache_discovery_errors_total{cluster="orders",source="consul"}`); got == "" || got == "0" {
		t.Errorf("attache_discovery_errors_total: got %q, want at least 1", got)
	}
	if got, _ := ask(h.addr("orders"), "5"); got != "c:5" {
		t.Errorf("while Consul is down: got %q, want c:5", got)
	}
	if d := h.clusterStatus("orders").Discovery; d == nil || !d.Stale || d.Error == "" {
		t.Errorf("/status discovery: got %+v, want stale with the error", d)
	}
}

// TestConsulDiscoveryACL: with ACLs on and default deny, the token is what
// lets attache see the instances; a bad token is an error on /ready.
func TestConsulDiscoveryACL(t *testing.T) {
	agent := testenv.Consul(t)
	agent.ReadToken("orders", consulReadToken)
	a, _ := echoServer(t, "a")
	agent.Register("orders", "orders-a", a)
	agent.PassTTL("orders-a")
	h := start(t, yamlf(`
listeners:
  - {name: l1, address: "127.0.0.1:0", cluster: with-token}
  - {name: l2, address: "%[3]s", cluster: no-token}
  - {name: l3, address: "%[4]s", cluster: bad-token}
clusters:
  - {name: with-token, discovery: {consul: {address: %[1]s, service: orders, token: %[2]s}}}
  - {name: no-token, discovery: {consul: {address: %[1]s, service: orders}}}
  - {name: bad-token, discovery: {consul: {address: %[1]s, service: orders, token: 11111111-2222-3333-4444-555555555555}}}
`, agent.Addr, consulReadToken, deadAddr(t), deadAddr(t)), nil)
	h.waitEndpoints("with-token", 10*time.Second, a)
	if got, _ := ask(h.addr("l1"), "x"); got != "a:x" {
		t.Errorf("with the token: got %q, want a:x", got)
	}
	// Without a token Consul answers, and filters every instance out.
	eventually(t, 10*time.Second, "an answer for the cluster without a token", func() bool {
		d := h.clusterStatus("no-token").Discovery
		return d != nil && d.LastSuccess != nil
	})
	if n := len(h.endpointStates("no-token")); n != 0 {
		t.Errorf("without a token: got %d endpoints, want 0", n)
	}
	eventually(t, 10*time.Second, "the ACL error on /ready", func() bool {
		code, body := h.admin("GET", "/ready")
		return code == 503 && strings.Contains(body, `cluster "bad-token": consul discovery failing since`) &&
			strings.Contains(body, "403") && strings.Contains(body, "no endpoints yet")
	})
}
