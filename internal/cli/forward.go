package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/attache-proxy/attache/internal/app"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/protocols"
)

// forwardCmd is the one-line socat case: listen on LISTEN, forward to
// UPSTREAM, optionally originating TLS with verification. It builds the same
// configuration a file would hold, so it gets the same checks, health
// reporting and metrics. There is no admin server unless --admin asks for
// one, so that several forwards run side by side on one host.
func forwardCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("forward", stderr)
	useTLS := fs.Bool("tls", false, "originate TLS to UPSTREAM, verifying its certificate")
	sni := fs.String("sni", "", "server `name` to send and verify (default: UPSTREAM's host)")
	ca := fs.String("ca", "", "CA `file` to verify UPSTREAM with (default: system roots)")
	adminAddr := fs.String("admin", "", "serve the admin endpoints on `address` (default: no admin server, so that forwards run side by side)")
	level := fs.String("log-level", "", "log level: debug, info, warn or error")
	pos, err := parse(fs, args)
	if err != nil {
		return ErrUsage
	}
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "attache forward: want LISTEN UPSTREAM, for example: attache forward 8000 api.example.com:443 --tls")
		return ErrUsage
	}
	if (*sni != "" || *ca != "") && !*useTLS {
		fmt.Fprintln(stderr, "attache forward: --sni and --ca need --tls")
		return ErrUsage
	}
	cluster := map[string]any{"name": "upstream", "endpoints": []string{pos[1]}}
	if *useTLS {
		t := map[string]any{}
		if *sni != "" {
			t["server_name"] = *sni
		}
		if *ca != "" {
			t["ca_file"] = *ca
		}
		cluster["tls"] = t
	}
	admin := *adminAddr
	if admin == "" {
		admin = config.AdminOff
	}
	doc := map[string]any{
		"admin":     map[string]any{"address": admin},
		"drain_min": "0s", // a forward at a terminal exits as soon as its connections end
		"listeners": []any{map[string]any{"name": "forward", "address": listenAddr(pos[0]), "cluster": "upstream"}},
		"clusters":  []any{cluster},
	}
	b, _ := yaml.Marshal(doc)
	cfg, err := config.Parse(b, os.LookupEnv, protocols.Schemas())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "forwarding %s -> %s (tls: %v)", cfg.Listeners[0].Address, pos[1], *useTLS)
	if *adminAddr != "" {
		fmt.Fprintf(stdout, "; admin on http://%s/", *adminAddr)
	}
	fmt.Fprintln(stdout)
	return serve(ctx, app.Options{Config: cfg, LogLevel: *level, LogOutput: stderr})
}

// listenAddr turns a bare port into a loopback address: a sidecar listens
// on localhost unless told otherwise.
func listenAddr(s string) string {
	if _, err := strconv.Atoi(s); err == nil {
		return "127.0.0.1:" + s
	}
	return s
}
