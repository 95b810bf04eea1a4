package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ConsulToken is the management token of the agents Consul starts: ACLs
// are on with default deny, as in a production datacenter, so a test can
// show what a token changes.
const ConsulToken = "attache-test-management-token"

// ConsulAgent is a private `consul agent -dev` on free loopback ports.
// Dev mode keeps everything in memory: a restart starts from an empty
// catalog with its Raft index back near zero.
type ConsulAgent struct {
	Addr string // HTTP API, 127.0.0.1:port

	t    testing.TB
	bin  string
	args []string
	log  string
	stop func()
}

// consulBin finds the consul binary that tools/build.sh builds (see Tool).
func consulBin(t testing.TB) string {
	t.Helper()
	return Tool(t, "consul")
}

// Consul starts a dev agent (server, leader of its own datacenter "dc1",
// ACLs on with ConsulToken as management and agent token) and waits until
// it has a leader and has registered its own node. It is stopped, by its
// PID, when the test ends.
func Consul(t testing.TB) *ConsulAgent {
	t.Helper()
	bin := consulBin(t)
	port := func() string { _, p, _ := net.SplitHostPort(FreePort(t)); return p }
	c := &ConsulAgent{t: t, bin: bin, log: filepath.Join(t.TempDir(), "consul.log")}
	httpPort := port()
	c.Addr = "127.0.0.1:" + httpPort
	// The flags of a dev agent confined to loopback; DNS and gRPC are off
	// since nothing here uses them.
	c.args = []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", httpPort, "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-serf-lan-port", port(), "-serf-wan-port", port(), "-server-port", port(),
		"-hcl", "disable_update_check = true",
		"-hcl", fmt.Sprintf("acl {\n enabled = true\n default_policy = \"deny\"\n tokens {\n initial_management = %q\n agent = %q\n }\n}", ConsulToken, ConsulToken),
		"-log-level", "warn"}
	c.start()
	return c
}

func (c *ConsulAgent) start() {
	c.t.Helper()
	out, err := os.OpenFile(c.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, c.args...)
	cmd.Stdout, cmd.Stderr = out, out
	stop := Start(c.t, cmd)
	c.stop = func() { stop(); out.Close() }
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The node is in the catalog once anti-entropy ran with the agent
		// token: from then on registrations are visible.
		var nodes []struct{ Node string }
		err := c.call("GET", "/v1/catalog/nodes", nil, &nodes)
		if err == nil && len(nodes) > 0 {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.log)
			c.t.Fatalf("consul agent at %s not ready within 30s (%v); its log:\n%s", c.Addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the agent (SIGTERM, by PID) and waits for it to exit.
func (c *ConsulAgent) Stop() { c.stop() }

// Restart stops the agent and starts it again on the same ports. Being a
// dev agent it comes back empty, with a lower index than before.
func (c *ConsulAgent) Restart() {
	c.t.Helper()
	c.stop()
	c.start()
}

// Do calls the HTTP API with the management token: body, when not nil, is
// sent as JSON, and the answer is decoded into out when out is not nil.
func (c *ConsulAgent) Do(method, path string, body, out any) {
	c.t.Helper()
	if err := c.call(method, path, body, out); err != nil {
		c.t.Fatalf("consul %s %s: %v", method, path, err)
	}
}

func (c *ConsulAgent) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+c.Addr+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-Consul-Token", ConsulToken)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Register registers a service instance on the agent with a TTL check that
// starts critical, so that the instance is not passing until PassTTL.
// tags may be empty.
func (c *ConsulAgent) Register(service, id, addr string, tags ...string) {
	c.t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		c.t.Fatal(err)
	}
	var p int
	fmt.Sscan(port, &p)
	c.Do("PUT", "/v1/agent/service/register", map[string]any{
		"ID": id, "Name": service, "Address": host, "Port": p, "Tags": tags,
		"Check": map[string]any{"CheckID": id + "-ttl", "Name": "ttl", "TTL": "10m", "Status": "critical"},
	}, nil)
}

// PassTTL and FailTTL set the TTL check of a registered instance.
func (c *ConsulAgent) PassTTL(id string) { c.Do("PUT", "/v1/agent/check/pass/"+id+"-ttl", nil, nil) }

// FailTTL marks the instance critical.
func (c *ConsulAgent) FailTTL(id string) { c.Do("PUT", "/v1/agent/check/fail/"+id+"-ttl", nil, nil) }

// Index returns the X-Consul-Index of the passing instances of service.
func (c *ConsulAgent) Index(service string) string {
	c.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+c.Addr+"/v1/health/service/"+service+"?passing", nil)
	req.Header.Set("X-Consul-Token", ConsulToken)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("X-Consul-Index")
}

// ReadToken creates a token with the given secret (a UUID) that may read
// service and the nodes it runs on, which the health endpoint also needs.
// A restarted dev agent has forgotten it: create it again.
func (c *ConsulAgent) ReadToken(service, secret string) {
	c.t.Helper()
	name := "read-" + service
	c.Do("PUT", "/v1/acl/policy", map[string]any{"Name": name,
		"Rules": fmt.Sprintf(`service %q { policy = "read" } node_prefix "" { policy = "read" }`, service)}, nil)
	c.Do("PUT", "/v1/acl/token", map[string]any{"SecretID": secret, "Policies": []map[string]string{{"Name": name}}}, nil)
}
