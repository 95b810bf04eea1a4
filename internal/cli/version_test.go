package cli

import (
	"runtime/debug"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	vcs := func(kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}
		for i := 0; i < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name            string
		version, commit string
		bi              *debug.BuildInfo
		want            string
	}{
		{"stamped", "v0.3.0-12-gabc1234", "abc1234def56", vcs("vcs.revision", rev), "v0.3.0-12-gabc1234 (commit abc1234def56, go1.26.8)"},
		{"commit from vcs.revision", "v0.3.0", "", vcs("vcs.revision", rev, "vcs.modified", "false"), "v0.3.0 (commit 0123456789ab, go1.26.8)"},
		{"dirty tree", "dev", "", vcs("vcs.revision", rev, "vcs.modified", "true"), "dev (commit 0123456789ab-dirty, go1.26.8)"},
		{"go install module version", "dev", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "v0.4.0 (commit unknown, go1.26.8)"},
		{"stamped version wins over module", "v0.5.0", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "v0.5.0 (commit unknown, go1.26.8)"},
		{"no build info", "dev", "", nil, "dev (commit unknown, go1.26.8)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatVersion(tt.version, tt.commit, tt.bi, "go1.26.8"); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
