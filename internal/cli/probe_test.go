package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// TestProbe: attache probe exits 0 when the admin or probe server answers
// 200, 1 when it answers otherwise or not at all, 2 on a bad command line.
func TestProbe(t *testing.T) {
	up := echo(t)
	dead := testenv.FreePort(t) // nothing listens there
	listen, down, admin, probes := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	file := filepath.Join(t.TempDir(), "attache.yaml")
	os.WriteFile(file, []byte(`admin: {address: "`+admin+`"}
probes: {address: "`+probes+`"}
drain_min: 0s
listeners:
  - {name: l, address: "`+listen+`", cluster: c}
  - {name: m, address: "`+down+`", cluster: d}
clusters:
  - {name: c, endpoints: ["`+up+`"]}
  - {name: d, endpoints: ["`+dead+`"], health_check: {interval: 100ms}}
`), 0o644)
	running(t, []string{"run", "--config", file}, io.Discard, io.Discard)
	testenv.WaitTCP(t, admin, 5*time.Second)
	testenv.WaitTCP(t, probes, 5*time.Second)

	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"health", []string{"probe", "health", "--admin", admin}, 0, "ok"},
		{"started", []string{"probe", "started", "--admin", admin}, 0, "started"},
		{"ready names what is missing", []string{"probe", "ready", "--admin", admin}, 1, `cluster "d"`},
		{"probe server health", []string{"probe", "health", "--admin", probes}, 0, "ok"},
		{"probe server ready", []string{"probe", "ready", "--admin", probes}, 1, "not ready"},
		{"flag first", []string{"probe", "--admin", probes, "started"}, 0, "started"},
		{"nothing listening", []string{"probe", "health", "--admin", dead}, 1, ""},
		{"unknown probe", []string{"probe", "live", "--admin", admin}, 2, ""},
		{"no probe", []string{"probe"}, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			code := ExitCode(Run(t.Context(), tc.args, &out, &errs), &errs)
			if code != tc.code || !strings.Contains(out.String(), tc.out) {
				t.Errorf("%q: got exit %d, output %q (stderr %q); want exit %d, output with %q", tc.args, code, out.String(), errs.String(), tc.code, tc.out)
			}
		})
	}
}
