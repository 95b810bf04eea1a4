package app

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// endpointStatus returns an endpoint of a cluster from /status.
func (h *harness) endpointStatus(cluster, addr string) EndpointStatus {
	h.t.Helper()
	_, body := h.admin("GET", "/status")
	var s Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		h.t.Fatalf("/status: %v\n%s", err, body)
	}
	for _, c := range s.Clusters {
		for _, e := range c.Endpoints {
			if c.Name == cluster && e.Address == addr {
				return e
			}
		}
	}
	h.t.Fatalf("/status has no endpoint %s in cluster %s:\n%s", addr, cluster, body)
	return EndpointStatus{}
}

// TestPostgresRolesOnStatusAndReady, with a real primary and streaming
// standby behind a postgres health check (standby listed first): roles
// and lag on /status and /metrics; paused replay grows the lag metric;
// promoting the standby while the primary runs is a split brain on /ready
// and in metrics; stopping the old primary ends it, and the promoted
// endpoint is the primary with no config change.
func TestPostgresRolesOnStatusAndReady(t *testing.T) {
	t.Parallel()
	primary, standby := testenv.PostgresPair(t)
	h := start(t, yamlf(`
listeners:
  - {name: orders, address: "%s", cluster: orders}
clusters:
  - name: orders
    endpoints: ["%s", "%s"]
    health_check: {type: postgres, user: postgres, password: "${PGPW}", interval: 1s, timeout: 1s}
  - {name: plain, endpoints: ["%s"], health_check: {type: tcp, interval: 1s, timeout: 1s}}
`, testenv.FreePort(t), standby.Addr, primary.Addr, primary.Addr), map[string]string{"PGPW": primary.Password})
	role := func(addr, r string) string {
		return h.metric(fmt.Sprintf(`attache_cluster_endpoint_role{cluster="orders",endpoint="%s",role="%s"}`, addr, r))
	}
	lagMetric := `attache_postgres_replication_lag_seconds{cluster="orders",endpoint="` + standby.Addr + `"}`
	splitMetric := `attache_cluster_split_brain{cluster="orders"}`

	eventually(t, 30*time.Second, "roles learned", func() bool {
		return role(primary.Addr, "primary") == "1" && role(standby.Addr, "standby") == "1" && h.metric(lagMetric) == "0"
	})
	if got := role(standby.Addr, "primary"); got != "0" {
		t.Errorf("standby's primary gauge: got %q, want 0", got)
	}
	if got := h.metric(`attache_postgres_replication_lag_seconds{cluster="orders",endpoint="` + primary.Addr + `"}`); got != "" {
		t.Errorf("lag series for the primary: got %q, want none", got)
	}
	if got := h.metric(splitMetric); got != "0" {
		t.Errorf("split brain gauge: got %q, want 0", got)
	}
	if got := h.metric(`attache_cluster_endpoint_role{cluster="plain",endpoint="` + primary.Addr + `",role="unknown"}`); got != "" {
		t.Errorf("role series for a tcp-checked cluster: got %q, want none", got)
	}
	if e := h.endpointStatus("orders", primary.Addr); e.Role != "primary" || e.LagSeconds == nil || *e.LagSeconds != 0 {
		t.Errorf("/status primary: got %+v", e)
	}
	if e := h.endpointStatus("orders", standby.Addr); e.Role != "standby" || e.LagSeconds == nil {
		t.Errorf("/status standby: got %+v", e)
	}
	if e := h.endpointStatus("plain", primary.Addr); e.Role != "" || e.LagSeconds != nil {
		t.Errorf("/status of a tcp-checked endpoint shows role %q lag %v, want neither", e.Role, e.LagSeconds)
	}

	// Replay paused while the primary writes: the lag passes 2s. (A
	// standby that has replayed no commit since it started cannot tell its
	// lag: replay one first.)
	primary.SQL(t, "CREATE TABLE t (v int); INSERT INTO t VALUES (0)")
	eventually(t, 20*time.Second, "the first row on the standby", func() bool {
		n, err := standby.TrySQL("SELECT count(*) FROM t")
		return err == nil && n == "1"
	})
	standby.PauseReplay(t)
	eventually(t, 30*time.Second, "lag over 2s with replay paused", func() bool {
		primary.SQL(t, "INSERT INTO t VALUES (1)")
		time.Sleep(100 * time.Millisecond)
		lag, err := strconv.ParseFloat(h.metric(lagMetric), 64)
		return err == nil && lag > 2
	})
	if e := h.endpointStatus("orders", standby.Addr); e.LagSeconds == nil || *e.LagSeconds <= 2 {
		t.Errorf("/status lag with replay paused: got %+v, want over 2s", e)
	}
	standby.ResumeReplay(t)

	// Promoted while the old primary keeps running: split brain.
	h.waitReady()
	standby.Promote(t)
	promoted := time.Now()
	want := fmt.Sprintf(`cluster "orders": split brain: 2 endpoints claim to be primary (%s, %s)`, standby.Addr, primary.Addr)
	eventually(t, 30*time.Second, "split brain on /ready", func() bool {
		code, body := h.admin("GET", "/ready")
		return code == 503 && strings.Contains(body, want)
	})
	t.Logf("split brain on /ready %v after pg_ctl promote returned (interval 1s)", time.Since(promoted).Round(10*time.Millisecond))
	if got := h.metric(splitMetric); got != "1" {
		t.Errorf("split brain gauge: got %q, want 1", got)
	}

	// The old primary stops: the promoted endpoint is the one primary.
	primary.Stop()
	stopped := time.Now()
	h.waitReadyWithin(30 * time.Second)
	t.Logf("ready again %v after the old primary stopped", time.Since(stopped).Round(10*time.Millisecond))
	eventually(t, 30*time.Second, "the promoted endpoint to be primary, alone", func() bool {
		return role(standby.Addr, "primary") == "1" && role(primary.Addr, "unknown") == "1" && h.metric(splitMetric) == "0"
	})
	if c := h.app.gen.Load().clusters["orders"].up; c != nil {
		if p, err := c.Primary(); err != nil || p.Addr != standby.Addr {
			t.Errorf("Primary: got %v, %v; want %s", p, err, standby.Addr)
		}
	}
}

// waitReadyWithin waits for /ready to answer 200.
func (h *harness) waitReadyWithin(d time.Duration) {
	h.t.Helper()
	eventually(h.t, d, "attache ready", func() bool {
		code, _ := h.admin("GET", "/ready")
		return code == 200
	})
}
