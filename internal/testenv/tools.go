package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Tool finds a binary that tools/build.sh builds: $ATTACHE_TOOLS/bin/name,
// then ~/.cache/attache-tools/bin/name, then PATH. Without it the test is
// skipped (failed under CI) with a message saying how to build it.
func Tool(t testing.TB, name string) string {
	t.Helper()
	var cands []string
	if d := os.Getenv("ATTACHE_TOOLS"); d != "" {
		cands = append(cands, filepath.Join(d, "bin", name))
	}
	if h, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(h, ".cache", "attache-tools", "bin", name))
	}
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	Unavailable(t, "%s not found in %s or PATH: build it with tools/build.sh %s", name, strings.Join(cands, ", "), name)
	return ""
}
