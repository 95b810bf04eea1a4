package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Commit is set at build time with -ldflags "-X .../cli.Commit=abc1234";
// unset, the VCS revision the go command recorded in the binary is used.
var Commit = ""

// version is what `attache version` prints after the program name, e.g.
// "v0.3.0-12-gabc1234 (commit abc1234def56, go1.26.8)".
func version() string {
	bi, _ := debug.ReadBuildInfo()
	return formatVersion(Version, Commit, bi, runtime.Version())
}

// formatVersion fills what the linker did not stamp from the build info
// (the module version of a `go install`, vcs.revision and vcs.modified of a
// build in a checkout); bi may be nil. An unknown commit reads "unknown".
func formatVersion(version, commit string, bi *debug.BuildInfo, goVersion string) string {
	if bi != nil {
		if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		if commit == "" {
			commit = vcsCommit(bi.Settings)
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, %s)", version, commit, goVersion)
}

// vcsCommit is the revision recorded by the go command, shortened to 12
// digits, with "-dirty" when the tree had changes.
func vcsCommit(settings []debug.BuildSetting) string {
	var rev, modified string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && modified == "true" {
		rev += "-dirty"
	}
	return rev
}
