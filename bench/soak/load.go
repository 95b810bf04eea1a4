package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// options are the flags of soak load.
type options struct {
	proto, addr, admin, ca, serverName, faults string
	duration, probeEvery, grace, slack         time.Duration
	workers                                    int
	rate                                       float64
	webLogs, shards, pgServers                 []string
	pgUser, pgPassword, pgDatabase, failLog    string
}

// result is one finished request.
type result struct {
	start, end time.Time
	write      bool
	err        error
}

// worker sends one request per call to do. A write returns the id it
// wrote; ok means the client got the acknowledgement. since is when the
// state the request depended on began: the request's start, or, for a
// TCP request, when its connection was opened.
type worker interface {
	do(rnd *rand.Rand) (write bool, id int64, since time.Time, err error)
	close()
}

// driver holds what every worker shares.
type driver struct {
	opt   options
	tls   *tls.Config
	ids   atomic.Int64
	sent  atomic.Int64
	ok    atomic.Int64
	mu    sync.Mutex
	acked []int64 // acknowledged write ids
	fails []result
	seen  []string // server certificate CNs seen by probes, in order, distinct
}

// nextID is a fresh write id.
func (d *driver) nextID() int64 { return d.ids.Add(1) }

// ackedID is a random acknowledged id, or 0 when there is none yet.
func (d *driver) ackedID(rnd *rand.Rand) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.acked) == 0 {
		return 0
	}
	return d.acked[rnd.IntN(len(d.acked))]
}

// record counts a finished request.
func (d *driver) record(start time.Time, write bool, id int64, err error) {
	d.sent.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.fails = append(d.fails, result{start: start, end: time.Now(), write: write, err: err})
		return
	}
	d.ok.Add(1)
	if write {
		d.acked = append(d.acked, id)
	}
}

// tlsConfig verifies the listener's certificate against the soak CA.
func (d *driver) tlsConfig() *tls.Config {
	pem, err := os.ReadFile(d.opt.ca)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		log.Fatalf("%s: no certificate", d.opt.ca)
	}
	return &tls.Config{RootCAs: pool, ServerName: d.opt.serverName}
}

func runLoad(args []string) int {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	var o options
	var webLogs, shards, pgServers string
	fs.StringVar(&o.proto, "proto", "", "tcp | http | redis | postgres")
	fs.StringVar(&o.addr, "addr", "", "attache listener")
	fs.StringVar(&o.admin, "admin", "", "attache admin address (for the reload and TLS counters)")
	fs.StringVar(&o.ca, "ca", "", "CA file the listener's certificates are signed by")
	fs.StringVar(&o.serverName, "server-name", "localhost", "name the certificates are checked for")
	fs.StringVar(&o.faults, "faults", "", "fault log written by soak.sh")
	fs.DurationVar(&o.duration, "duration", time.Minute, "how long to send load")
	fs.DurationVar(&o.probeEvery, "probe", 300*time.Millisecond, "how often a new TLS connection checks the certificate")
	fs.DurationVar(&o.grace, "grace", 3*time.Second, "how long after a backend is back its failures still count as while down")
	fs.DurationVar(&o.slack, "slack", 100*time.Millisecond, "how close to a kill a request must end to count as in flight")
	fs.IntVar(&o.workers, "workers", 8, "concurrent clients")
	fs.Float64Var(&o.rate, "rate", 400, "requests per second, all workers together")
	fs.StringVar(&webLogs, "web-logs", "", "http: the backends' id logs, comma-separated")
	fs.StringVar(&shards, "shards", "", "redis: the shards, comma-separated")
	fs.StringVar(&pgServers, "pg-servers", "", "postgres: the servers, comma-separated")
	fs.StringVar(&o.pgUser, "pg-user", "postgres", "postgres: user")
	fs.StringVar(&o.failLog, "failures", "", "file every failure is written to: start and end (ns), write, error")
	fs.StringVar(&o.pgDatabase, "pg-database", "postgres", "postgres: database")
	fs.Parse(args)
	o.pgPassword = os.Getenv("PGPASSWORD")
	o.webLogs, o.shards, o.pgServers = split(webLogs), split(shards), split(pgServers)

	d := &driver{opt: o}
	d.tls = d.tlsConfig()
	var newWorker func() (worker, error)
	var probe func(*tls.Config) error
	var check func() (missing, dup int, note string, err error)
	switch o.proto {
	case "tcp":
		newWorker, probe, check = d.tcp()
	case "http":
		newWorker, probe, check = d.http()
	case "redis":
		newWorker, probe, check = d.redis()
	case "postgres":
		newWorker, probe, check = d.postgres()
	default:
		log.Fatalf("unknown protocol %q", o.proto)
	}

	end := time.Now().Add(o.duration)
	var wg sync.WaitGroup
	for i := 0; i < o.workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.work(newWorker, end, uint64(i))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.probe(probe, end)
	}()
	wg.Wait()

	if err := waitDone(o.faults, 3*time.Minute); err != nil {
		log.Print(err)
	}
	events, err := readFaults(o.faults)
	if err != nil {
		log.Print(err)
	}
	missing, dup, note, err := check()
	if err != nil {
		log.Printf("%s: check: %v", o.proto, err)
		missing, dup = -1, -1
	}
	c := classify(d.fails, events, o.slack, o.grace, expectedDown(o.proto))
	if o.failLog != "" {
		writeFailures(o.failLog, d.fails)
	}
	rotated := rotations(events, end)
	reloads := adminCounters(o.admin)
	fmt.Println(d.row(c, missing, dup, rotated, reloads))
	d.details(c, note, rotated, reloads)
	if c.other > 0 || missing != 0 || dup != 0 || !d.sawAll(rotated) {
		return 1
	}
	return 0
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// work runs one worker's requests until end, at its share of the rate.
func (d *driver) work(newWorker func() (worker, error), end time.Time, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	w, err := newWorker()
	if err != nil {
		log.Fatalf("%s: worker: %v", d.opt.proto, err)
	}
	defer w.close()
	tick := time.NewTicker(time.Duration(float64(d.opt.workers) / d.opt.rate * float64(time.Second)))
	defer tick.Stop()
	for time.Now().Before(end) {
		start := time.Now()
		write, id, since, err := w.do(rnd)
		if since.IsZero() || since.After(start) {
			since = start
		}
		d.record(since, write, id, err)
		<-tick.C
	}
}

// probe makes a new TLS connection every probeEvery until end, and notes
// each new certificate CN it sees. Its requests count as reads.
func (d *driver) probe(probe func(*tls.Config) error, end time.Time) {
	for time.Now().Before(end) {
		var cn atomic.Pointer[string]
		cfg := d.tls.Clone()
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				cn.Store(&cs.PeerCertificates[0].Subject.CommonName)
			}
			return nil
		}
		start := time.Now()
		err := probe(cfg)
		d.record(start, false, 0, err)
		if seen := cn.Load(); err == nil && seen != nil {
			d.mu.Lock()
			if len(d.seen) == 0 || d.seen[len(d.seen)-1] != *seen {
				d.seen = append(d.seen, *seen)
			}
			d.mu.Unlock()
		}
		time.Sleep(d.opt.probeEvery)
	}
}

// event is a line of the fault log: "T0 T1 KIND ARG", T0 before the
// action, T1 after it (a kill's T1 is after the process has exited).
type event struct {
	t0, t1    time.Time
	kind, arg string
}

func readFaults(path string) ([]event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var evs []event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 3 {
			continue
		}
		t0, err0 := strconv.ParseInt(fl[0], 10, 64)
		t1, err1 := strconv.ParseInt(fl[1], 10, 64)
		if err0 != nil || err1 != nil {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		ev := event{t0: time.Unix(0, t0), t1: time.Unix(0, t1), kind: fl[2]}
		if len(fl) > 3 {
			ev.arg = fl[3]
		}
		evs = append(evs, ev)
	}
	return evs, sc.Err()
}

// writeFailures lists every failure, one a line, in the order recorded.
func writeFailures(path string, fails []result) {
	var b strings.Builder
	for _, f := range fails {
		fmt.Fprintf(&b, "%d %d %v %s\n", f.start.UnixNano(), f.end.UnixNano(), f.write, strings.ReplaceAll(f.err.Error(), "\n", " "))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		log.Print(err)
	}
}

// waitDone waits, bounded, until the fault log ends with "done": every
// backend is back, so the check sees all of them.
func waitDone(path string, limit time.Duration) error {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		evs, _ := readFaults(path)
		if len(evs) > 0 && evs[len(evs)-1].kind == "done" {
			return nil
		}
	}
	return fmt.Errorf("%s: no \"done\" after %v; checking anyway", path, limit)
}

// classes splits the failures: in flight at a kill (by signal), while a
// killed backend was down, and the rest, which should not happen.
type classes struct {
	failed, term, kill, down, other int
	writesFailed                    int
	otherErrs                       map[string]int
	downErrs                        map[string]int
	otherNear                       map[string]int // the fault last before each other failure
}

func classify(fails []result, events []event, slack, grace time.Duration, expected func(error, event) bool) classes {
	c := classes{otherErrs: map[string]int{}, downErrs: map[string]int{}, otherNear: map[string]int{}}
	for _, f := range fails {
		c.failed++
		if f.write {
			c.writesFailed++
		}
		if k := inFlightAt(f, events, slack); k != "" {
			if k == "kill-term" {
				c.term++
			} else {
				c.kill++
			}
			continue
		}
		if whileDown(f, events, grace, expected) {
			c.down++
			c.downErrs[short(f.err)]++
			continue
		}
		c.other++
		c.otherErrs[short(f.err)]++
		c.otherNear[nearest(f, events)]++
	}
	return c
}

// expectedDown says which failures a dead backend explains for a
// protocol: for redis, attache's error naming the dead shard, or the
// shard's own LOADING while it reads its append-only file back. Nothing
// else: tcp and http have another endpoint, postgres transactions wait
// for the promoted standby.
func expectedDown(proto string) func(error, event) bool {
	if proto != "redis" {
		return func(error, event) bool { return false }
	}
	return func(err error, e event) bool {
		s := err.Error()
		return strings.Contains(s, "shard "+e.arg+" ") || strings.HasPrefix(s, "LOADING")
	}
}

// inFlightAt is the kind of the kill a request was in flight at, or "".
func inFlightAt(f result, events []event, slack time.Duration) string {
	for _, e := range events {
		if (e.kind == "kill-term" || e.kind == "kill-kill") && !f.start.After(e.t1) && !f.end.Before(e.t0.Add(-slack)) {
			return e.kind
		}
	}
	return ""
}

// whileDown: the request ran while a killed backend was down, from the
// kill to grace after its "up", and its error is one expected of a
// request to that backend.
func whileDown(f result, events []event, grace time.Duration, expected func(error, event) bool) bool {
	for i, e := range events {
		if (e.kind == "kill-term" || e.kind == "kill-kill") && expected(f.err, e) && overlaps(f, e.t0, backAt(events, i).Add(grace)) {
			return true
		}
	}
	return false
}

// backAt is when the backend killed by events[i] was back: its next "up",
// or now.
func backAt(events []event, i int) time.Time {
	for _, u := range events[i+1:] {
		if u.kind == "up" && u.arg == events[i].arg {
			return u.t1
		}
	}
	return time.Now()
}

// overlaps: the request ran at some time between from and to.
func overlaps(f result, from, to time.Time) bool {
	return !f.end.Before(from) && f.start.Before(to)
}

// nearest names what was going on at a failure: a killed backend being
// down ("s1 down"), else the last fault that began within 2 s before it
// ended ("reload", "cert", ...), else "none".
func nearest(f result, events []event) string {
	for i, e := range events {
		if (e.kind == "kill-term" || e.kind == "kill-kill") && overlaps(f, e.t0, backAt(events, i)) {
			return e.arg + " down"
		}
	}
	best := "none"
	for _, e := range events {
		if e.kind == "done" || e.t0.After(f.end) || f.end.Sub(e.t0) > 2*time.Second {
			continue
		}
		best = e.kind
	}
	return best
}

// short is an error's text for grouping: numbers (ids, ports) as N, cut.
func short(err error) string {
	s := digits.ReplaceAllString(err.Error(), "N")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

var digits = regexp.MustCompile(`[0-9]+`)

// rotations are the CNs of the certificates the script rotated in, the
// first one included, in order, leaving out those rotated less than a
// second before until (the end of the load: no probe could see them).
func rotations(events []event, until time.Time) []string {
	var cns []string
	for _, e := range events {
		if e.kind == "cert" && e.t1.Before(until.Add(-time.Second)) {
			cns = append(cns, e.arg)
		}
	}
	return cns
}

// sawAll: the probes saw every rotated certificate, in order.
func (d *driver) sawAll(rotated []string) bool {
	return strings.Join(d.seen, " ") == strings.Join(rotated, " ")
}

// reloadCounts are attache's counters at the end of the run.
type reloadCounts struct{ ok, failed, tlsErrors string }

// adminCounters reads the reload and TLS reload error counters from
// attache's /metrics ("?" when they cannot be read).
func adminCounters(admin string) reloadCounts {
	rc := reloadCounts{"?", "?", "?"}
	if admin == "" {
		return rc
	}
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + admin + "/metrics")
	if err != nil {
		return rc
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	rc.tlsErrors = "0"
	tlsErrs := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		fl := strings.Fields(line)
		if len(fl) != 2 {
			continue
		}
		switch {
		case fl[0] == `attache_config_reloads_total{result="success"}`:
			rc.ok = fl[1]
		case fl[0] == `attache_config_reloads_total{result="failure"}`:
			rc.failed = fl[1]
		case strings.HasPrefix(fl[0], "attache_tls_reload_errors_total"):
			v, _ := strconv.ParseFloat(fl[1], 64)
			tlsErrs += v
		}
	}
	if rc.failed == "?" && rc.ok != "?" {
		rc.failed = "0"
	}
	rc.tlsErrors = strconv.FormatFloat(tlsErrs, 'f', -1, 64)
	return rc
}

const rowFormat = "%-8s %7v %7v %6v %8v %6v %6v %7v %6v %5v %8v %10v %7v"

func header() string {
	return fmt.Sprintf(rowFormat, "protocol", "sent", "ok", "failed", "term/kill", "down", "other",
		"w-acked", "lost", "dup", "certs", "reloads", "tls-err")
}

// row is the table line of a run.
func (d *driver) row(c classes, missing, dup int, rotated []string, rc reloadCounts) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Sprintf(rowFormat, d.opt.proto, d.sent.Load(), d.ok.Load(), c.failed,
		fmt.Sprintf("%d/%d", c.term, c.kill), c.down, c.other, len(d.acked), missing, dup,
		fmt.Sprintf("%d/%d", len(d.seen), len(rotated)), rc.ok+"/"+rc.failed, rc.tlsErrors)
}

// details explains a run's row on stderr.
func (d *driver) details(c classes, note string, rotated []string, rc reloadCounts) {
	p := d.opt.proto
	if note != "" {
		log.Printf("%s: %s", p, note)
	}
	if !d.sawAll(rotated) {
		log.Printf("%s: certificates seen %v, rotated %v", p, d.seen, rotated)
	}
	if rc.failed != "0" {
		log.Printf("%s: %s reloads failed (attache_config_reloads_total)", p, rc.failed)
	}
	show := func(what string, m map[string]int) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
		for i, k := range keys {
			if i == 5 {
				log.Printf("%s:   ... %d more kinds", p, len(keys)-5)
				break
			}
			log.Printf("%s:   %s %dx: %s", p, what, m[k], k)
		}
	}
	if c.down > 0 {
		log.Printf("%s: %d failed while a killed backend was down:", p, c.down)
		show("down", c.downErrs)
	}
	if c.other > 0 {
		log.Printf("%s: %d failed unexpectedly (what was going on: %v):", p, c.other, c.otherNear)
		show("other", c.otherErrs)
	}
}
