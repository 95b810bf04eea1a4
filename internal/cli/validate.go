package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/kubecheck"
	"github.com/attache-proxy/attache/internal/protocols"
)

// validateCmd checks configuration files and Kubernetes manifests: each
// FILE (or stdin for "-") whose documents have apiVersion and kind is a
// manifest, checked with every other manifest given (internal/kubecheck);
// any other is a configuration file, as --config FILE is. It prints every
// problem and returns errReported when one is an error; warnings and notes
// alone pass.
func validateCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	cfgFile := fs.String("config", "", "configuration `file` (YAML)")
	pos, err := parse(fs, args)
	if err != nil {
		return ErrUsage
	}
	if *cfgFile == "" && len(pos) == 0 {
		fmt.Fprintln(stderr, "attache validate: give FILE... (or - for stdin), or --config FILE\n\nUsage: attache validate [--config FILE] [FILE|-]...")
		return ErrUsage
	}
	failed := false
	if *cfgFile != "" && !validateConfig(*cfgFile, stdout, stderr) {
		failed = true
	}
	var manifests, configs []kubecheck.File
	stdinRead := false
	for _, name := range pos {
		var data []byte
		var err error
		if name == "-" {
			if stdinRead {
				continue
			}
			stdinRead = true
			name = "stdin"
			data, err = io.ReadAll(io.LimitReader(os.Stdin, maxManifest+1))
		} else {
			data, err = readLimited(name)
		}
		switch {
		case err != nil:
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			failed = true
		case len(data) > maxManifest:
			fmt.Fprintf(stderr, "%s: larger than %d MiB\n", name, maxManifest>>20)
			failed = true
		case kubecheck.IsManifest(data):
			manifests = append(manifests, kubecheck.File{Name: name, Data: data})
		default:
			configs = append(configs, kubecheck.File{Name: name, Data: data})
		}
	}
	// A file a kustomization among the manifests generates a ConfigMap
	// from is checked as that ConfigMap's content, in the pod it serves.
	generated := map[string]bool{}
	for _, g := range kubecheck.GeneratedFrom(manifests) {
		generated[g] = true
	}
	for _, f := range configs {
		if !generated[filepath.Clean(f.Name)] && !reportConfig(f.Name, f.Data, stdout, stderr) {
			failed = true
		}
	}
	if len(manifests) > 0 && !validateManifests(manifests, stdout, stderr) {
		failed = true
	}
	if failed {
		return errReported
	}
	return nil
}

// maxManifest bounds what validate reads from one file or stdin.
const maxManifest = 64 << 20

func readLimited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxManifest+1))
}

// validateConfig checks one configuration file and reports whether it is
// valid.
func validateConfig(name string, stdout, stderr io.Writer) bool {
	data, err := readLimited(name)
	if err != nil {
		fmt.Fprintf(stderr, "%s: 1 problem(s):\n  read config: %v\n", name, err)
		return false
	}
	return reportConfig(name, data, stdout, stderr)
}

func reportConfig(name string, data []byte, stdout, stderr io.Writer) bool {
	cfg, err := config.Parse(data, os.LookupEnv, protocols.Schemas())
	if err != nil {
		var errs config.Errors
		if !errors.As(err, &errs) {
			errs = config.Errors{{Msg: err.Error()}}
		}
		fmt.Fprintf(stderr, "%s: %d problem(s):\n", name, len(errs))
		for _, e := range errs {
			fmt.Fprintf(stderr, "  %v\n", e)
		}
		return false
	}
	fmt.Fprintf(stdout, "%s: ok (%d listeners, %d clusters)\n", name, len(cfg.Listeners), len(cfg.Clusters))
	return true
}

// validateManifests checks the manifests together: problems go to stderr,
// one line each, then a count; each attache container found is listed on
// stdout when there is no error.
func validateManifests(files []kubecheck.File, stdout, stderr io.Writer) bool {
	r := kubecheck.Check(files)
	var warnings, notes int
	for _, p := range r.Problems {
		fmt.Fprintln(stderr, p)
		switch p.Severity {
		case kubecheck.Warning:
			warnings++
		case kubecheck.Note:
			notes++
		}
	}
	errs := r.Errors()
	if errs == 0 {
		for _, s := range r.Sidecars {
			from := "config not checked"
			if s.Config != "" {
				from = "config from " + s.Config
			}
			fmt.Fprintf(stdout, "%s: document %d (%s): %s: ok (%s)\n", s.File, s.Doc, s.Object, s.Container, from)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(stderr, "attache validate: %s, %s, %s\n", plural(errs, "error"), plural(warnings, "warning"), plural(notes, "note"))
	}
	return errs == 0
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
