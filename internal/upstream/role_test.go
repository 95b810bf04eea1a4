package upstream

import (
	"errors"
	"testing"
	"time"
)

var (
	primary = Replication{Role: RolePrimary}
	standby = func(lag time.Duration) Replication { return Replication{Role: RoleStandby, Lag: lag, LagKnown: true} }
	lost    = Replication{Role: RoleStandby}
)

// step is one check result: a replication state on success, nil on failure.
type step *Replication

func ok(r Replication) step { return &r }

// TestEndpointRoleState: what the role, lag and primary claim of an
// endpoint are after a sequence of check results.
func TestEndpointRoleState(t *testing.T) {
	t.Parallel()
	th := Thresholds{Healthy: 1, Unhealthy: 2}
	for _, tc := range []struct {
		name     string
		steps    []step
		role     Role
		lag      time.Duration
		lagKnown bool
		claims   bool
	}{
		{"never checked", nil, RoleUnknown, 0, false, false},
		{"primary", []step{ok(primary)}, RolePrimary, 0, true, true},
		{"standby with lag", []step{ok(standby(3 * time.Second))}, RoleStandby, 3 * time.Second, true, false},
		{"standby that cannot tell its lag", []step{ok(lost)}, RoleStandby, 0, false, false},
		{"negative lag (clock skew) is 0", []step{ok(standby(-time.Second))}, RoleStandby, 0, true, false},
		{"promoted", []step{ok(standby(0)), ok(primary)}, RolePrimary, 0, true, true},
		{"demoted", []step{ok(primary), ok(standby(time.Second))}, RoleStandby, time.Second, true, false},
		{"one lost check keeps the role but not the claim", []step{ok(primary), nil}, RolePrimary, 0, true, false},
		{"unhealthy forgets the role", []step{ok(standby(time.Second)), nil, nil}, RoleUnknown, 0, false, false},
		{"back after unhealthy", []step{ok(primary), nil, nil, ok(standby(0))}, RoleStandby, 0, true, false},
		{"claim again after a lost check", []step{ok(primary), nil, ok(primary)}, RolePrimary, 0, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := NewEndpoint("a:1", 1)
			for _, s := range tc.steps {
				if s != nil {
					e.ObserveReplication(*s)
				}
				e.ObserveCheck(s != nil, th)
			}
			lag, known := e.Lag()
			if e.Role() != tc.role || lag != tc.lag || known != tc.lagKnown || e.ClaimsPrimary() != tc.claims {
				t.Errorf("got role %v lag %v known %v claims %v, want %v %v %v %v",
					e.Role(), lag, known, e.ClaimsPrimary(), tc.role, tc.lag, tc.lagKnown, tc.claims)
			}
		})
	}
}

// TestClusterPrimary: which endpoint writes go to, from the endpoints'
// check results; never from their order.
func TestClusterPrimary(t *testing.T) {
	t.Parallel()
	th := Thresholds{Healthy: 1, Unhealthy: 3}
	for _, tc := range []struct {
		name  string
		steps [][]step // per endpoint a, b, c
		want  string   // address, "none" or "split"
	}{
		{"unchecked", [][]step{nil, nil, nil}, "none"},
		{"primary is not first", [][]step{{ok(standby(0))}, {ok(standby(0))}, {ok(primary)}}, "c:1"},
		{"only standbys", [][]step{{ok(standby(0))}, {ok(standby(0))}, {ok(lost)}}, "none"},
		{"failover: dead old primary, promoted standby", [][]step{{ok(primary), nil}, {ok(standby(0)), ok(primary)}, {ok(standby(0)), ok(standby(0))}}, "b:1"},
		{"one lost check of the primary", [][]step{{ok(primary), nil}, {ok(standby(0)), ok(standby(0))}, nil}, "a:1"},
		{"dead primary, none promoted yet", [][]step{{ok(primary), nil, nil, nil}, {ok(standby(0))}, nil}, "none"},
		{"split brain", [][]step{{ok(primary)}, {ok(standby(0)), ok(primary)}, {ok(standby(0))}}, "split"},
		{"two lost checks, two old primaries", [][]step{{ok(primary), nil}, {ok(primary), nil}, nil}, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := New(Options{Name: "orders", HasHealthCheck: true})
			c.SetEndpoints([]Target{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "c:1"}})
			for i, e := range c.Endpoints() {
				for _, s := range tc.steps[i] {
					if s != nil {
						e.ObserveReplication(*s)
					}
					e.ObserveCheck(s != nil, th)
				}
			}
			if tc.want != "split" && c.SplitBrain() != nil {
				t.Errorf("SplitBrain without two primaries: %v", c.SplitBrain())
			}
			p, err := c.Primary()
			var sb *SplitBrainError
			switch {
			case tc.want == "none":
				if !errors.Is(err, ErrNoPrimary) {
					t.Errorf("got %v, %v; want ErrNoPrimary", p, err)
				}
			case tc.want == "split":
				if !errors.As(err, &sb) || len(sb.Endpoints) != 2 || sb.Endpoints[0] != "a:1" || sb.Endpoints[1] != "b:1" {
					t.Errorf("got %v, %v; want split brain of a:1 and b:1", p, err)
				}
				if len(c.Primaries()) != 2 {
					t.Errorf("Primaries: got %d, want 2", len(c.Primaries()))
				}
				if want := `cluster "orders": split brain: 2 endpoints claim to be primary (a:1, b:1)`; c.SplitBrain() == nil || c.SplitBrain().Error() != want {
					t.Errorf("SplitBrain: got %v, want %s", c.SplitBrain(), want)
				}
			case err != nil || p.Addr != tc.want:
				t.Errorf("got %v, %v; want %s", p, err, tc.want)
			}
		})
	}
}

// TestRoleSurvivesSetEndpoints: role and lag are kept by address when the
// endpoint set changes, as health is.
func TestRoleSurvivesSetEndpoints(t *testing.T) {
	t.Parallel()
	c := New(Options{Name: "orders", HasHealthCheck: true})
	c.SetEndpoints([]Target{{Addr: "a:1"}, {Addr: "b:1"}})
	c.Endpoints()[1].ObserveReplication(standby(2 * time.Second))
	c.Endpoints()[1].ObserveCheck(true, Thresholds{1, 1})
	c.Endpoints()[0].ObserveReplication(primary)

	next := New(Options{Name: "orders", HasHealthCheck: true})
	next.Inherit(c)
	next.SetEndpoints([]Target{{Addr: "b:1", Weight: 5}, {Addr: "a:1"}})
	b := next.Endpoints()[0]
	if lag, known := b.Lag(); b.Role() != RoleStandby || lag != 2*time.Second || !known {
		t.Errorf("b after reload: got %v %v %v, want standby 2s known", b.Role(), lag, known)
	}
	if p, err := next.Primary(); err != nil || p.Addr != "a:1" {
		t.Errorf("primary after reload: got %v, %v; want a:1", p, err)
	}
}
