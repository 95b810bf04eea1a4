package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/attache-proxy/attache/internal/app"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/protocols"
)

// The demo's fixed parts. The health check is fast so that the demo takes
// a few seconds; a real one checks every few seconds (the default is 5s).
const (
	demoCluster      = "backends"
	demoListener     = "app"
	demoFailEvery    = 4 // backend-a answers 503 to every 4th request
	demoBatch        = 20
	demoHealthEvery  = 250 * time.Millisecond
	demoUnhealthyAt  = 2 // failed checks in a row
	demoAttempts     = 3
	demoOutageLimit  = 15 * time.Second // bound on waiting for the health check's verdict
	demoRequestPause = 20 * time.Millisecond
)

// demoCmd shows what an ambassador is for, offline: attache as an HTTP
// listener with retries, health checks and outlier detection in front of
// two in-process backends, one that fails every few requests and one that
// is stopped half way. A plain client (no retries of its own) sends
// requests through it; the output shows that every request succeeded, how
// attache hid the failures, when /status took the dead backend out, and
// the metrics that counted it all. Then it keeps running for the user to
// try (or exits, with --once). It needs no network beyond loopback.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:10000", "proxy listener `address`")
	adminFlag := fs.String("admin", config.DefaultAdminAddress, "admin server `address`")
	once := fs.Bool("once", false, "exit after the demonstration")
	if _, err := parse(fs, args); err != nil {
		return ErrUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *adminFlag == config.AdminOff {
		fmt.Fprintln(stderr, "attache demo: the demo reads /status and /metrics from the admin server; --admin off is not supported")
		return ErrUsage
	}
	listenAt, err := demoAddr("listener", listenAddr(*listen), set["listen"], stdout)
	if err != nil {
		return err
	}
	adminAt, err := demoAddr("admin server", listenAddr(*adminFlag), set["admin"], stdout)
	if err != nil {
		return err
	}

	flaky, err := startDemoBackend("backend-a", demoFailEvery)
	if err != nil {
		return err
	}
	defer flaky.stop()
	doomed, err := startDemoBackend("backend-b", 0)
	if err != nil {
		return err
	}
	defer doomed.stop()

	cfg, err := demoConfig(listenAt, adminAt, []string{flaky.addr, doomed.addr})
	if err != nil {
		return err
	}
	a, err := app.New(app.Options{Config: cfg, LogOutput: stderr})
	if err != nil {
		return err
	}
	if a.AdminAddr() == "" || a.ListenerAddr(demoListener) == "" {
		a.Shutdown(context.Background())
		return fmt.Errorf("demo: the listener (%s) or the admin server (%s) could not listen", listenAt, adminAt)
	}
	d := &demoRun{
		out:        stdout,
		proxy:      a.ListenerAddr(demoListener),
		admin:      a.AdminAddr(),
		client:     &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}},
		flaky:      flaky,
		doomed:     doomed,
		ejectAfter: cfg.Clusters[0].OutlierDetection.ConsecutiveFailures,
		once:       *once,
	}
	err = d.run(ctx)
	d.client.CloseIdleConnections() // so that the drain does not wait for them
	if err != nil || *once {
		a.Shutdown(context.Background())
		if ctx.Err() != nil {
			return nil // stopped during the demonstration
		}
		return err
	}
	return runApp(ctx, a, stderr)
}

// demoAddr returns the address to give attache for addr: addr itself when
// it is free (or has port 0), else, when the user did not choose it, a
// free port on the same host, saying so on out.
func demoAddr(what, addr string, chosen bool, out io.Writer) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s address %q: %w", what, addr, err)
	}
	if port == "0" {
		return addr, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return addr, nil
	}
	if chosen {
		return "", fmt.Errorf("%s address %s: %w", what, addr, err)
	}
	fmt.Fprintf(out, "(%s is in use, so the %s takes a free port)\n", addr, what)
	return net.JoinHostPort(host, "0"), nil
}

// demoConfig is the configuration the demo runs: one HTTP listener whose
// route retries 5xx, resets and refused connections, and one cluster with
// an HTTP health check and outlier detection.
func demoConfig(listen, admin string, endpoints []string) (*config.Config, error) {
	doc := map[string]any{
		"admin": map[string]any{"address": admin},
		"log":   map[string]any{"level": "error"}, // the demo tells the story itself
		"listeners": []any{map[string]any{
			"name": demoListener, "address": listen, "protocol": "http",
			"http": map[string]any{"routes": []any{map[string]any{
				"match": map[string]any{"prefix": "/"},
				"to":    []any{map[string]any{"cluster": demoCluster}},
				"retries": map[string]any{
					"attempts": demoAttempts,
					"on":       []string{"5xx", "reset", "connect_failure"},
				},
			}}},
		}},
		"clusters": []any{map[string]any{
			"name": demoCluster, "endpoints": endpoints, "balance": "round_robin",
			"health_check": map[string]any{
				"type": "http", "path": "/healthz",
				"interval": demoHealthEvery.String(), "timeout": demoHealthEvery.String(),
				"unhealthy_threshold": demoUnhealthyAt,
			},
			"outlier_detection": map[string]any{"consecutive_failures": 5, "consecutive_5xx": 3},
		}},
		"drain_timeout": "2s",
		"drain_min":     "0s",
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return config.Parse(b, os.LookupEnv, protocols.Schemas())
}

// demoBackend is an in-process HTTP backend. It answers GET /healthz with
// 200 (the health check, not counted) and everything else with a hello
// naming itself, except every failEvery-th request (0: none), which gets a
// 503: deterministic, so that two requests in a row never both fail.
type demoBackend struct {
	name      string
	addr      string
	failEvery int64
	srv       *http.Server
	served    atomic.Int64 // requests, health checks not counted
	failed    atomic.Int64 // of which answered 503
	stopped   atomic.Bool
}

func startDemoBackend(name string, failEvery int) (*demoBackend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &demoBackend{name: name, addr: ln.Addr().String(), failEvery: int64(failEvery)}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	go b.srv.Serve(ln)
	return b, nil
}

func (b *demoBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		io.WriteString(w, "ok\n")
		return
	}
	n := b.served.Add(1)
	if b.failEvery > 0 && n%b.failEvery == 0 {
		b.failed.Add(1)
		http.Error(w, b.name+": overloaded, try again", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "hello from %s\n", b.name)
}

// stop closes the backend's listener and connections: from then on its
// port refuses connections, as a crashed process's would.
func (b *demoBackend) stop() {
	if b.stopped.CompareAndSwap(false, true) {
		b.srv.Close()
	}
}

// demoRun sends the demonstration's requests and tells what happened.
type demoRun struct {
	out           io.Writer
	proxy, admin  string
	client        *http.Client
	flaky, doomed *demoBackend
	ejectAfter    int
	once          bool
	start         time.Time

	sent, answered int // requests sent; answered 200
	retried        int // answered after more than one try (x-attache-attempts)
	by             map[string]int
}

func (d *demoRun) run(ctx context.Context) error {
	fmt.Fprintf(d.out, `attache demo: attache, the app's HTTP ambassador, listens on %s in front of
  backend-a  %s  answers 503 to every %dth request
  backend-b  %s  will be stopped half way through
It retries 5xx, resets and refused connections (%d tries in all), health-checks
GET /healthz every %v, and ejects a backend after %d refused connections in a row.

`, d.proxy, d.flaky.addr, demoFailEvery, d.doomed.addr, demoAttempts, demoHealthEvery, d.ejectAfter)

	if err := d.waitHealthy(ctx); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "A plain HTTP client (no retries of its own) sends GET http://%s/ :\n", d.proxy)
	d.start = time.Now()
	if err := d.batch(ctx, "requests", false); err != nil {
		return err
	}
	if err := d.outage(ctx); err != nil {
		return err
	}
	if err := d.batch(ctx, "more requests", true); err != nil {
		return err
	}

	metrics, err := d.settledMetrics(ctx)
	if err != nil {
		return err
	}
	failed := d.sent - d.answered
	fmt.Fprintf(d.out, "\nResult: %d of %d requests answered 200 OK.\n", d.answered, d.sent)
	fmt.Fprintf(d.out, "Behind attache, backend-a answered 503 %d times and backend-b refused %s connections;\n",
		d.flaky.failed.Load(), metricValue(metrics, "attache_cluster_connect_errors_total", `endpoint="`+d.doomed.addr+`"`))
	fmt.Fprintf(d.out, "attache sent each of those requests again, to a backend that answered: the client saw none\nof it (%d answers took more than one try, says their x-attache-attempts header).\n", d.retried)

	fmt.Fprintf(d.out, "\nWhat attache counted (GET http://%s/metrics):\n", d.admin)
	for _, l := range demoMetricLines(metrics, d.doomed.addr) {
		fmt.Fprintln(d.out, "  "+l)
	}
	fmt.Fprintf(d.out, "\nStatus page: http://%s/\n", d.admin)
	d.tryThese()
	if failed > 0 {
		return fmt.Errorf("%d of %d requests through attache failed", failed, d.sent)
	}
	return nil
}

// tryThese prints the commands to try, and whether attache keeps running
// for them.
func (d *demoRun) tryThese() {
	fmt.Fprintln(d.out, "Try:")
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	for _, c := range [][2]string{
		{"curl -si http://" + d.proxy + "/", "x-attache-attempts: how many tries it took"},
		{"curl -s http://" + d.admin + "/status", "listeners, clusters, endpoint health (JSON)"},
		{"curl -s http://" + d.admin + "/ready", "readiness, as a kubelet probe sees it"},
		{"curl -s http://" + d.admin + "/config", "the running configuration"},
	} {
		fmt.Fprintf(tw, "  %s\t# %s\n", c[0], c[1])
	}
	tw.Flush()
	fmt.Fprintf(d.out, "  curl -s http://%s/metrics | grep -E 'retries|health_transitions|ejections'\n", d.admin)
	fmt.Fprintf(d.out, "  for i in 1 2 3 4 5 6 7 8; do curl -s -o /dev/null -w '%%{http_code} ' http://%s/; done; echo\n", d.proxy)
	if d.once {
		fmt.Fprintln(d.out, "--once: attache stops now; without it, it keeps running for these.")
	} else {
		fmt.Fprintln(d.out, "attache keeps running (backend-b stays down); Ctrl-C drains and stops it.")
	}
}

// settledMetrics returns the /metrics page once it has counted every
// answer the client read: attache counts a request when it has written
// the response, which the client may read first.
func (d *demoRun) settledMetrics(ctx context.Context) (string, error) {
	deadline := time.Now().Add(demoOutageLimit)
	for {
		m, err := d.get("/metrics")
		if err != nil {
			return "", err
		}
		n, _ := strconv.Atoi(metricValue(m, "attache_http_requests_total", `code="2xx"`))
		if n >= d.answered || time.Now().After(deadline) {
			return m, nil
		}
		if err := pause(ctx, demoRequestPause); err != nil {
			return "", err
		}
	}
}

// waitHealthy waits until the first health checks have passed for both
// backends (they take traffic only then).
func (d *demoRun) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(demoOutageLimit)
	for {
		st, err := d.status()
		if err != nil {
			return err
		}
		if endpointState(st, d.flaky.addr) == "healthy" && endpointState(st, d.doomed.addr) == "healthy" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the backends were not healthy within %v: %s is %s, %s is %s", demoOutageLimit,
				d.flaky.addr, endpointState(st, d.flaky.addr), d.doomed.addr, endpointState(st, d.doomed.addr))
		}
		if err := pause(ctx, demoRequestPause); err != nil {
			return err
		}
	}
}

// batch sends demoBatch requests and prints one line about them.
func (d *demoRun) batch(ctx context.Context, what string, onlyFlaky bool) error {
	sent, answered := d.sent, d.answered
	byA, byB := d.by["backend-a"], d.by["backend-b"]
	failedA := d.flaky.failed.Load()
	for range demoBatch {
		if err := ctx.Err(); err != nil {
			return err
		}
		d.send()
	}
	split := fmt.Sprintf("from backend-a %d, backend-b %d", d.by["backend-a"]-byA, d.by["backend-b"]-byB)
	if onlyFlaky && d.by["backend-b"] == byB {
		split = "all from backend-a"
	}
	d.say("%d %s: %d answered 200 OK (%s); backend-a failed %d with 503, retried by attache",
		d.sent-sent, what, d.answered-answered, split, d.flaky.failed.Load()-failedA)
	return nil
}

// outage stops backend-b and goes on sending requests, one at a time,
// until attache's health check has marked it unhealthy, telling each
// change /status shows.
func (d *demoRun) outage(ctx context.Context) error {
	sent, answered := d.sent, d.answered
	d.doomed.stop()
	d.say("backend-b stopped: its listener is closed, its port refuses connections")
	stopped := time.Now()
	after := func() string { return fmt.Sprintf("%.2fs after the stop", time.Since(stopped).Seconds()) }
	deadline := time.Now().Add(demoOutageLimit)
	state := "healthy"
	for {
		d.send()
		st, err := d.status()
		if err != nil {
			return err
		}
		now := endpointState(st, d.doomed.addr)
		if now != state {
			state = now
			switch now {
			case "ejected":
				d.say("/status: backend-b ejected %s (%d refused connections in a row)", after(), d.ejectAfter)
			case "unhealthy":
				d.say("/status: backend-b unhealthy %s (%d failed health checks in a row)", after(), demoUnhealthyAt)
				return d.outageDone(sent, answered)
			default:
				d.say("/status: backend-b %s %s", now, after())
			}
		}
		if state == "ejected" {
			// /status shows the ejection first; the health check's verdict
			// is counted in the metrics meanwhile.
			m, err := d.get("/metrics")
			if err != nil {
				return err
			}
			if v := metricValue(m, "attache_cluster_health_transitions_total", `endpoint="`+d.doomed.addr+`"`, `health="unhealthy"`); v != "0" {
				d.say("/metrics: backend-b unhealthy %s (%d failed health checks in a row)", after(), demoUnhealthyAt)
				return d.outageDone(sent, answered)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("backend-b was not marked unhealthy within %v of its stop (/status: %s)", demoOutageLimit, state)
		}
		if err := pause(ctx, demoRequestPause); err != nil {
			return err
		}
	}
}

func (d *demoRun) outageDone(sent, answered int) error {
	m, err := d.get("/metrics")
	if err != nil {
		return err
	}
	refused := metricValue(m, "attache_cluster_connect_errors_total", `endpoint="`+d.doomed.addr+`"`)
	d.say("during the outage: %d requests, %d answered 200 OK; attache sent the %s tries backend-b refused to backend-a",
		d.sent-sent, d.answered-answered, refused)
	return nil
}

// send makes one request through attache, counts its answer, and prints
// it if it was not a 200.
func (d *demoRun) send() {
	d.sent++
	resp, err := d.client.Get("http://" + d.proxy + "/")
	if err != nil {
		d.say("request %d failed: %v", d.sent, err)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		d.say("request %d failed: %s %q %v", d.sent, resp.Status, body, err)
		return
	}
	d.answered++
	if n, _ := strconv.Atoi(resp.Header.Get("X-Attache-Attempts")); n > 1 {
		d.retried++
	}
	if d.by == nil {
		d.by = map[string]int{}
	}
	d.by[strings.TrimSpace(strings.TrimPrefix(string(body), "hello from "))]++
}

func (d *demoRun) say(format string, args ...any) {
	fmt.Fprintf(d.out, "  +%.2fs  %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// get returns the body of GET path on the admin server.
func (d *demoRun) get(path string) (string, error) {
	resp, err := d.client.Get("http://" + d.admin + path)
	if err != nil {
		return "", fmt.Errorf("admin server: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("admin server %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("admin server %s: %s", path, resp.Status)
	}
	return string(b), nil
}

// status returns attache's /status.
func (d *demoRun) status() (app.Status, error) {
	var st app.Status
	b, err := d.get("/status")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(b), &st); err != nil {
		return st, fmt.Errorf("admin server /status: %w", err)
	}
	return st, nil
}

// endpointState is the state /status gives the demo cluster's endpoint
// addr: healthy, unhealthy, ejected, not checked yet, or "absent".
func endpointState(st app.Status, addr string) string {
	for _, c := range st.Clusters {
		if c.Name != demoCluster {
			continue
		}
		for _, e := range c.Endpoints {
			if e.Address == addr {
				return e.State
			}
		}
	}
	return "absent"
}

// demoMetrics are the metrics that tell the demo's story, in the order
// printed; deadOnly: only the dead backend's samples.
var demoMetrics = []struct {
	name     string
	deadOnly bool
	labels   string // a label every sample printed has
}{
	{"attache_http_requests_total", false, ""},
	{"attache_http_retries_total", false, ""},
	{"attache_cluster_connect_errors_total", true, ""},
	{"attache_cluster_endpoint_ejections_total", true, ""},
	{"attache_cluster_health_transitions_total", true, `health="unhealthy"`},
	{"attache_cluster_endpoint_healthy", false, ""},
}

// demoMetricLines picks from a /metrics page the samples of demoMetrics
// (dead is the dead backend's address).
func demoMetricLines(page, dead string) []string {
	lines := strings.Split(page, "\n")
	var out []string
	for _, m := range demoMetrics {
		for _, l := range lines {
			name, labels, ok := strings.Cut(l, "{")
			if !ok || name != m.name || (m.deadOnly && !strings.Contains(labels, `endpoint="`+dead+`"`)) ||
				!strings.Contains(labels, m.labels) {
				continue
			}
			out = append(out, l)
		}
	}
	return out
}

// metricValue returns the value of the first sample of metric name whose
// labels contain every one of want, or "0" when there is none.
func metricValue(page, name string, want ...string) string {
	for _, l := range strings.Split(page, "\n") {
		n, rest, ok := strings.Cut(l, "{")
		if !ok || n != name {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		all := true
		for _, w := range want {
			all = all && strings.Contains(labels, w)
		}
		if all {
			return value
		}
	}
	return "0"
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
