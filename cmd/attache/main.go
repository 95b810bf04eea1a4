// Command attache is an ambassador sidecar: see internal/cli for the
// commands.
package main

import (
	"context"
	"os"

	"github.com/attache-proxy/attache/internal/cli"
)

func main() {
	err := cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(cli.ExitCode(err, os.Stderr))
}
