package health

import (
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/upstream"
)

func TestParseReplication(t *testing.T) {
	t.Parallel()
	b := func(s string) []byte { return []byte(s) }
	for _, tc := range []struct {
		name string
		row  [][]byte
		want upstream.Replication
		err  string
	}{
		{"primary", [][]byte{b("f"), b("f"), nil, nil}, upstream.Replication{Role: upstream.RolePrimary, LagKnown: true}, ""},
		{"primary that was a standby", [][]byte{b("f"), b("f"), nil, b("12.5")}, upstream.Replication{Role: upstream.RolePrimary, LagKnown: true}, ""},
		{"caught-up standby of an idle primary", [][]byte{b("t"), b("t"), b("t"), b("3600.25")}, upstream.Replication{Role: upstream.RoleStandby, LagKnown: true}, ""},
		{"standby replaying a backlog", [][]byte{b("t"), b("t"), b("f"), b("2.5")}, upstream.Replication{Role: upstream.RoleStandby, Lag: 2500 * time.Millisecond, LagKnown: true}, ""},
		{"standby cut off from its primary", [][]byte{b("t"), b("f"), b("t"), b("7")}, upstream.Replication{Role: upstream.RoleStandby, Lag: 7 * time.Second, LagKnown: true}, ""},
		{"standby that never received", [][]byte{b("t"), b("f"), nil, b("7")}, upstream.Replication{Role: upstream.RoleStandby, Lag: 7 * time.Second, LagKnown: true}, ""},
		{"standby behind with nothing replayed", [][]byte{b("t"), b("t"), b("f"), nil}, upstream.Replication{Role: upstream.RoleStandby}, ""},
		{"clock skew", [][]byte{b("t"), b("t"), b("f"), b("-0.3")}, upstream.Replication{Role: upstream.RoleStandby, LagKnown: true}, ""},
		{"short row", [][]byte{b("t")}, upstream.Replication{}, "got 1 columns"},
		{"null recovery", [][]byte{nil, b("f"), nil, nil}, upstream.Replication{}, "pg_is_in_recovery"},
		{"bad boolean", [][]byte{b("yes"), b("f"), nil, nil}, upstream.Replication{}, "pg_is_in_recovery"},
		{"bad age", [][]byte{b("t"), b("t"), b("f"), b("soon")}, upstream.Replication{}, "replay age"},
		{"NaN age", [][]byte{b("t"), b("t"), b("f"), b("NaN")}, upstream.Replication{}, "replay age"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseReplication(tc.row)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("got %v, %v; want error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
