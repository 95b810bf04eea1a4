package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/inject"
)

// injectCmd writes the manifests of FILE (or stdin for "-") to stdout with
// the attache sidecar added to every pod spec; see docs/kubernetes.md.
func injectCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inject", stderr)
	image := fs.String("image", "attache:"+Version, "sidecar `image`")
	cm := fs.String("configmap", inject.DefaultMap, "ConfigMap `name` holding "+inject.ConfigKey)
	cfgFile := fs.String("config", "", "configuration `file`: validated, emitted as the ConfigMap, and read for probes and token")
	classic := fs.Bool("classic", false, "a plain container rather than a native sidecar (Kubernetes < 1.29)")
	pos, err := parse(fs, args)
	if err != nil {
		return ErrUsage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "attache inject: want one FILE (or - for stdin)\n\nUsage: attache inject FILE|- [--config FILE] [--configmap NAME] [--image IMAGE] [--classic]")
		return ErrUsage
	}
	opts := inject.Options{Image: *image, ConfigMap: *cm, Classic: *classic}
	if *cfgFile != "" {
		data, err := os.ReadFile(*cfgFile)
		if err != nil {
			return fmt.Errorf("attache inject: %w", err)
		}
		f, err := inject.ReadConfig(data)
		var errs config.Errors
		if errors.As(err, &errs) {
			fmt.Fprintf(stderr, "%s: %d problem(s):\n", *cfgFile, len(errs))
			for _, e := range errs {
				fmt.Fprintf(stderr, "  %v\n", e)
			}
			return errReported
		}
		if err != nil {
			return err
		}
		opts.Config, opts.Facts = data, f
	}
	in := io.Reader(os.Stdin)
	if pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return fmt.Errorf("attache inject: %w", err)
		}
		defer f.Close()
		in = f
	}
	return inject.Inject(in, stdout, opts)
}
