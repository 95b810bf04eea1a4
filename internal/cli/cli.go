// Package cli is attache's command line: run, validate, forward, demo,
// probe, inject and version. Run is main without the process: arguments, streams and a
// context in, an error out.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/attache-proxy/attache/internal/app"
	"github.com/attache-proxy/attache/internal/config"
)

// Version is set at build time with -ldflags "-X .../cli.Version=v1.2.3".
var Version = "dev"

// ErrUsage is returned for a command line that cannot be run; the usage has
// been printed.
var ErrUsage = errors.New("usage")

const usage = `attache: an ambassador sidecar. The application talks to localhost; attache
owns every connection to the outside.

Usage:
  attache run --config FILE [--log-level LEVEL]   run with a configuration file
  attache validate [--config FILE] [FILE|-]...    check configuration files and Kubernetes
                                                  manifests that run attache
  attache forward LISTEN UPSTREAM [--tls] [--sni NAME] [--ca FILE] [--admin ADDR]
                                                  forward one port (socat, done right);
                                                  no admin server without --admin
  attache demo [--listen ADDR] [--admin ADDR] [--once]
                                                  show retries, health checks and ejection
                                                  in front of two local backends
  attache probe ready|health|started [--admin ADDR]
                                                  exit 0 when the admin server (default
                                                  127.0.0.1:9901) or probe server says so
  attache inject FILE|- [--config FILE] [--configmap NAME] [--image IMAGE] [--classic]
                                                  print Kubernetes manifests with the
                                                  attache sidecar added
  attache version                                 print the version

Signals: SIGHUP reloads the configuration; SIGTERM or SIGINT drains and
exits (a second one exits at once).
`

// Run runs the command in args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ErrUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runCmd(ctx, rest, stderr)
	case "validate":
		return validateCmd(rest, stdout, stderr)
	case "forward":
		return forwardCmd(ctx, rest, stdout, stderr)
	case "demo":
		return demoCmd(ctx, rest, stdout, stderr)
	case "probe":
		return probeCmd(rest, stdout, stderr)
	case "inject":
		return injectCmd(rest, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "attache", version())
		return nil
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "attache: unknown command %q\n\n%s", cmd, usage)
	return ErrUsage
}

// parse parses flags that may come before, between or after positional
// arguments, and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("attache "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func runCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	file := fs.String("config", "", "configuration `file` (YAML)")
	level := fs.String("log-level", "", "log level: debug, info, warn or error (overrides log.level)")
	if _, err := parse(fs, args); err != nil {
		return ErrUsage
	}
	if *file == "" {
		fmt.Fprintln(stderr, "attache run: --config FILE is required")
		return ErrUsage
	}
	return serve(ctx, app.Options{ConfigPath: *file, LogLevel: *level, LogOutput: stderr})
}

// gcPercent is the GC target used unless GOGC is set. A sidecar's live heap
// is a few MiB, so the default of 100 collects many times a second under
// HTTP load (a quarter of the CPU in profiles); 400 cuts that to a small
// share for some 10-20 MiB more under load, and changes nothing at idle,
// where nothing is allocated. See docs/design-core.md.
const gcPercent = 400

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// serve starts an app and runs it until a signal: SIGHUP reloads, the first
// SIGTERM/SIGINT (or ctx ending) drains, a second cuts the drain short.
func serve(ctx context.Context, opts app.Options) error {
	tuneGC()
	a, err := app.New(opts)
	if err != nil {
		return err
	}
	return runApp(ctx, a, opts.LogOutput)
}

func runApp(ctx context.Context, a *app.App, _ io.Writer) error {
	soft, stopSoft := context.WithCancel(ctx)
	defer stopSoft()
	hard, stopHard := context.WithCancel(context.Background())
	defer stopHard()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		stops := 0
		for s := range sigs {
			if s == syscall.SIGHUP {
				a.Log().Info("SIGHUP: reloading")
				a.Reload()
				continue
			}
			stops++
			a.Log().Info("signal received", "signal", s.String())
			if stops == 1 {
				stopSoft()
			} else {
				stopHard()
			}
		}
	}()
	return a.Run(soft, hard)
}

// errReported is an error already printed in full.
var errReported = errors.New("reported")

// ExitCode maps Run's error to a process exit code and prints it unless it
// was already reported.
func ExitCode(err error, stderr io.Writer) int {
	var cerrs config.Errors
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage):
		return 2
	case errors.Is(err, errReported):
		return 1
	case errors.As(err, &cerrs):
		fmt.Fprintf(stderr, "attache: configuration has %d problem(s):\n", len(cerrs))
		for _, e := range cerrs {
			fmt.Fprintf(stderr, "  %v\n", e)
		}
		return 1
	}
	fmt.Fprintf(stderr, "attache: %v\n", err)
	return 1
}
