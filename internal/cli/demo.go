package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/attache-proxy/attache/internal/app"
	"github.com/attache-proxy/attache/internal/config"
)

// demoCmd starts two small HTTP backends in-process and attache in front of
// them as a TCP load balancer with health checks, sends a few requests
// through it, and keeps running for the user to try. It needs no network
// beyond loopback.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:10000", "proxy listener `address`")
	adminAddr := fs.String("admin", config.DefaultAdminAddress, "admin server `address`")
	once := fs.Bool("once", false, "exit after the demonstration requests")
	if _, err := parse(fs, args); err != nil {
		return ErrUsage
	}

	var backends []string
	for _, name := range []string{"backend-a", "backend-b"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s (%s %s)\n", name, r.Method, r.URL.Path)
		}), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		backends = append(backends, ln.Addr().String())
	}

	doc := map[string]any{
		"admin": map[string]any{"address": *adminAddr},
		"log":   map[string]any{"level": "warn"},
		"listeners": []any{map[string]any{
			"name": "web", "address": *listen, "protocol": "tcp", "cluster": "web-backends"}},
		"clusters": []any{map[string]any{
			"name": "web-backends", "endpoints": backends, "balance": "round_robin",
			"health_check": map[string]any{"type": "tcp", "interval": "1s", "timeout": "500ms"}}},
		"drain_timeout": "2s",
		"drain_min":     "0s",
	}
	b, _ := yaml.Marshal(doc)
	cfg, err := config.Parse(b, os.LookupEnv)
	if err != nil {
		return err
	}
	a, err := app.New(app.Options{Config: cfg, LogOutput: stderr})
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ok, _ := a.Ready(); ok {
			break
		}
	}

	proxy, admin := a.ListenerAddr("web"), a.AdminAddr()
	if admin == "" { // the port is taken: the admin server comes up once it is free
		admin = cfg.Admin.Address
	}
	fmt.Fprintf(stdout, "attache demo: a TCP load balancer on %s in front of two local HTTP backends (%s).\n\n", proxy, strings.Join(backends, ", "))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 1; i <= 4; i++ {
		resp, err := client.Get("http://" + proxy + "/demo")
		if err != nil {
			a.Shutdown(ctx)
			return fmt.Errorf("demo request through attache: %w", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(stdout, "  request %d -> %s", i, body)
	}
	fmt.Fprintf(stdout, `
Each new connection goes to the next healthy backend (round robin).
Try:
  curl -s http://%[1]s/            alternates between backend-a and backend-b
  curl -s http://%[2]s/status      listeners, clusters, endpoint health (JSON)
  curl -s http://%[2]s/ready       readiness, as a kubelet probe sees it
  curl -s http://%[2]s/metrics     Prometheus metrics
  curl -s http://%[2]s/config      the running configuration
Press Ctrl-C to drain and stop.
`, proxy, admin)
	if *once {
		a.Shutdown(context.Background())
		return nil
	}
	return runApp(ctx, a, stderr)
}
