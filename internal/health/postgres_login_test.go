package health_test

// These tests log in with pgproxy.Login, as attache's postgres check does;
// pgproxy imports health (its Protocol makes that check), hence an
// external test package.

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/health"
	"github.com/attache-proxy/attache/internal/pgproxy"
	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

func pgChecker(user, password string) *health.Postgres {
	return &health.Postgres{Dial: (&net.Dialer{}).DialContext, Login: func(conn net.Conn) (*pgproto3.Frontend, error) {
		s, err := pgproxy.Login(conn, user, "postgres", password, map[string]string{"application_name": "attache-health-check"})
		if err != nil {
			return nil, err
		}
		return s.FE, nil
	}}
}

// checkPair runs one round over the endpoints and returns them.
func checkPair(t *testing.T, c *upstream.Cluster, chk health.Checker) []*upstream.Endpoint {
	t.Helper()
	pol := health.Policy{Interval: time.Second, Timeout: 10 * time.Second, Thresholds: upstream.Thresholds{Healthy: 1, Unhealthy: 2}}
	health.Round(context.Background(), c, chk, pol, slog.New(slog.DiscardHandler), nil)
	return c.Endpoints()
}

// waitRound repeats rounds until cond holds, for at most 30 rounds, and
// returns how many it took.
func waitRound(t *testing.T, c *upstream.Cluster, chk health.Checker, what string, cond func([]*upstream.Endpoint) bool) int {
	t.Helper()
	for i := 1; i <= 30; i++ {
		if cond(checkPair(t, c, chk)) {
			return i
		}
		time.Sleep(300 * time.Millisecond)
	}
	var states []string
	for _, e := range c.Endpoints() {
		lag, known := e.Lag()
		states = append(states, e.Addr+" "+e.Health().String()+" "+e.Role().String()+" lag "+lag.String()+map[bool]string{false: " (unknown)"}[known])
	}
	t.Fatalf("after 30 rounds, still waiting for %s: %s", what, strings.Join(states, "; "))
	return 0
}

// TestPostgresRolesAndLag, against a real primary and streaming standby:
// roles are learned whatever the endpoint order; an idle primary leaves
// a caught-up standby at lag 0; paused replay with writes on the primary
// grows the lag; after the primary stops and the standby is promoted the
// promoted one is the primary, with no change to the endpoint set.
func TestPostgresRolesAndLag(t *testing.T) {
	t.Parallel()
	primary, standby := testenv.PostgresPair(t)
	// Not a superuser: the query must work for a plain login role.
	primary.SQL(t, "CREATE ROLE checker LOGIN PASSWORD 'check-pw'")
	chk := pgChecker("checker", "check-pw")
	c := upstream.New(upstream.Options{Name: "orders", HasHealthCheck: true})
	// The standby first: config order says nothing.
	c.SetEndpoints([]upstream.Target{{Addr: standby.Addr}, {Addr: primary.Addr}})

	waitRound(t, c, chk, "standby then primary, both healthy, standby at lag 0", func(eps []*upstream.Endpoint) bool {
		lag, known := eps[0].Lag()
		return eps[0].Health() == upstream.Healthy && eps[0].Role() == upstream.RoleStandby && known && lag == 0 &&
			eps[1].Health() == upstream.Healthy && eps[1].Role() == upstream.RolePrimary
	})
	if p, err := c.Primary(); err != nil || p.Addr != primary.Addr {
		t.Fatalf("Primary: got %v, %v; want %s", p, err, primary.Addr)
	}

	// A replayed commit grows old while the primary is idle: lag stays 0.
	primary.SQL(t, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
	for i := 0; standby.SQL(t, "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp()) > 1.5") != "t"; i++ {
		if i == 100 {
			t.Fatal("the replayed commit did not reach the standby within 20s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitRound(t, c, chk, "lag 0 on a caught-up standby of an idle primary", func(eps []*upstream.Endpoint) bool {
		lag, known := eps[0].Lag()
		return known && lag == 0
	})

	// Replay paused, primary writing: the lag passes a threshold.
	standby.PauseReplay(t)
	const threshold = 2 * time.Second
	for i := 0; i < 100; i++ {
		primary.SQL(t, "INSERT INTO t VALUES (2)")
		eps := checkPair(t, c, chk)
		if lag, known := eps[0].Lag(); known && lag > threshold {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if lag, known := c.Endpoints()[0].Lag(); !known || lag <= threshold {
		t.Fatalf("paused replay: lag %v (known %v), want over %v", lag, known, threshold)
	}
	standby.ResumeReplay(t)
	waitRound(t, c, chk, "lag back to 0 after resume", func(eps []*upstream.Endpoint) bool {
		lag, known := eps[0].Lag()
		return known && lag == 0
	})

	// Failover: the primary stops, the standby is promoted.
	primary.Stop()
	standby.Promote(t)
	n := waitRound(t, c, chk, "the promoted standby to be primary", func(eps []*upstream.Endpoint) bool {
		return eps[0].Role() == upstream.RolePrimary && eps[0].Health() == upstream.Healthy
	})
	t.Logf("promoted standby seen as primary at check round %d after pg_ctl promote returned", n)
	if p, err := c.Primary(); err != nil || p.Addr != standby.Addr {
		t.Fatalf("Primary after failover: got %v, %v; want %s", p, err, standby.Addr)
	}
	if old := c.Endpoints()[1]; old.ClaimsPrimary() {
		t.Errorf("stopped primary still claims primary (health %v)", old.Health())
	}
}

// TestPostgresCheckFails: a wrong password fails the check and learns
// no role.
func TestPostgresCheckFails(t *testing.T) {
	t.Parallel()
	pg := testenv.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if rep, err := pgChecker(pg.User, "wrong").CheckReplication(ctx, pg.Addr); err == nil || !strings.Contains(err.Error(), "28P01") {
		t.Errorf("wrong password: got %+v, %v; want SQLSTATE 28P01", rep, err)
	}
	if rep, err := pgChecker(pg.User, pg.Password).CheckReplication(ctx, pg.Addr); err != nil || rep.Role != upstream.RolePrimary {
		t.Errorf("right password: got %+v, %v; want primary", rep, err)
	}
}
