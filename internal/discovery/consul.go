package discovery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Consul defaults. Wait is Consul's own default; the client's timeout is
// longer by Consul's jitter (wait/16) and some slack.
const (
	DefaultConsulWait        = 5 * time.Minute
	DefaultConsulMinInterval = 250 * time.Millisecond
	DefaultConsulBackoffBase = 500 * time.Millisecond
	DefaultConsulBackoffMax  = 30 * time.Second
)

// Consul follows the passing instances of a service with blocking queries
// on /v1/health/service/<Service>?passing, as Consul documents them
// (https://developer.hashicorp.com/consul/api-docs/features/blocking):
//
//   - the X-Consul-Index of each answer is the index of the next query;
//   - an index that goes backwards (a restored snapshot, another server)
//     starts over from 0, a non-blocking read;
//   - an index of 0 is taken as 1, so that a buggy answer cannot turn the
//     loop into a stream of non-blocking reads;
//   - queries start at most every MinInterval, which bounds the load when
//     the service changes very often;
//   - after an error the next query waits a jittered, growing backoff, and
//     starts over from index 0: the agent that answers may have restarted
//     with a lower index, and a query with a higher one would block until
//     Wait ends without seeing any change. For the same reason a blocking
//     query is only sent on the connection that brought its index: on a
//     new connection (after the agent closed the old one, or a restart
//     between two queries) the index is read again first.
//
// An instance's address is Service.Address, or Node.Address when the
// service registered none; its weight is Weights.Passing; its zone is
// Service.Locality.Zone, or the node meta key ZoneMeta. While Consul
// cannot be read the last known set is kept (Report is told why), as
// Envoy and Prometheus keep theirs when their discovery source is gone.
type Consul struct {
	Address    string // host:port
	Scheme     string // http | https; "" is http
	Service    string
	Tag        string // "" for every instance
	Datacenter string // "" for the agent's
	Token      string // sent as X-Consul-Token when set
	// ZoneMeta is the node meta key of an instance's zone, used when its
	// service has no Locality; "" is config.DefaultConsulZoneMeta.
	ZoneMeta string

	Client      *http.Client  // nil: http.DefaultTransport, with a timeout above Wait
	Wait        time.Duration // 0: DefaultConsulWait
	MinInterval time.Duration // 0: DefaultConsulMinInterval
	BackoffBase time.Duration // 0: DefaultConsulBackoffBase
	BackoffMax  time.Duration // 0: DefaultConsulBackoffMax
	Log         *slog.Logger
	Report      func(error) // told nil after each good answer and the error after each failure; may be nil
}

// NewConsulClient returns an HTTP client for Consul that verifies the
// agent's certificate against caFile, or the system roots when it is "".
func NewConsulClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}

// Run queries Consul until ctx ends.
func (c *Consul) Run(ctx context.Context, update func([]upstream.Target)) {
	wait := or(c.Wait, DefaultConsulWait)
	minInterval := or(c.MinInterval, DefaultConsulMinInterval)
	client := c.Client
	if client == nil {
		client = &http.Client{}
	}
	// A blocking query may take wait plus Consul's jitter of up to wait/16;
	// past that the agent is not answering.
	client = &http.Client{Transport: client.Transport, Timeout: wait + wait/16 + 10*time.Second}
	defer client.CloseIdleConnections() // a rebuilt cluster leaves no connection to the agent behind
	log := c.Log.With("consul", c.Address, "service", c.Service)

	var (
		index    uint64
		last     []upstream.Target
		have     bool
		failures int
		started  time.Time
		fresh    bool // the latest answer came on a new connection
	)
	for {
		if d := time.Until(started.Add(minInterval)); d > 0 && !sleep(ctx, d) {
			return
		}
		started = time.Now()
		ts, next, err := c.query(ctx, client, index, wait, &fresh)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errFreshConn) {
			log.Debug("new connection to consul; reading without an index first", "index", index)
			index = 0
			continue
		}
		if c.Report != nil {
			c.Report(err)
		}
		if err != nil {
			failures++
			d := backoff(failures, or(c.BackoffBase, DefaultConsulBackoffBase), or(c.BackoffMax, DefaultConsulBackoffMax))
			log.Warn("consul discovery failed; keeping the last endpoints", "error", err, "kept", len(last), "retry_in", d.Round(time.Millisecond))
			index = 0
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		if failures > 0 {
			log.Info("consul discovery recovered", "after_failures", failures)
		}
		failures = 0
		switch {
		case next < index:
			log.Info("consul index went backwards; starting over", "index", next, "was", index)
			index = 0
		case next == 0:
			index = 1
		default:
			index = next
		}
		if !have || !slices.Equal(ts, last) {
			log.Info("consul discovery", "endpoints", len(ts), "index", next)
			last, have = ts, true
			update(ts)
		}
	}
}

var errFreshConn = errors.New("blocking query on a new connection")

// consulEntry is the part of one /v1/health/service answer that is used.
type consulEntry struct {
	Node struct {
		Address string
		Meta    map[string]string
	}
	Service struct {
		Address string
		Port    int
		Weights struct {
			Passing int
		}
		Locality *struct { // Consul 1.17+
			Zone string
		}
	}
}

// zone is an instance's zone: its service's Locality.Zone, else the node
// meta key (Consul's own locality is newer than the node meta convention,
// and more precise: it is the service's).
func (e *consulEntry) zone(metaKey string) string {
	if l := e.Service.Locality; l != nil && l.Zone != "" {
		return l.Zone
	}
	if metaKey == "" {
		metaKey = config.DefaultConsulZoneMeta
	}
	return e.Node.Meta[metaKey]
}

// query runs one (blocking, when index > 0) health query and returns the
// instances, sorted by address, and the answer's index.
//
// *fresh tells, on the way in, whether the previous answer came on a new
// connection, and is set to whether this one did.
func (c *Consul) query(ctx context.Context, client *http.Client, index uint64, wait time.Duration, fresh *bool) (ts []upstream.Target, next uint64, err error) {
	q := url.Values{}
	if index > 0 {
		q.Set("index", strconv.FormatUint(index, 10))
		q.Set("wait", strconv.Itoa(int(wait/time.Millisecond))+"ms")
	}
	if c.Tag != "" {
		q.Set("tag", c.Tag)
	}
	if c.Datacenter != "" {
		q.Set("dc", c.Datacenter)
	}
	scheme := c.Scheme
	if scheme == "" {
		scheme = "http"
	}
	u := url.URL{Scheme: scheme, Host: c.Address, Path: "/v1/health/service/" + c.Service, RawQuery: strings.TrimSuffix("passing&"+q.Encode(), "&")}
	// A blocking query goes only on the connection that brought its index.
	// A new one may reach a restarted agent, or another server behind a
	// load balancer, with a lower index, where the query would block for
	// the whole wait: the request is abandoned as soon as the connection is
	// known to be new, and the caller reads without an index first. When that read came on a new
	// connection too, connections do not last here (a proxy that closes
	// them), and the query goes on as it is rather than never blocking.
	qctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	strict := index > 0 && !*fresh
	qctx = httptrace.WithClientTrace(qctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		*fresh = !i.Reused
		if strict && !i.Reused {
			cancel(errFreshConn)
		}
	}})
	req, err := http.NewRequestWithContext(qctx, "GET", u.String(), nil)
	if err != nil {
		return nil, 0, err
	}
	if c.Token != "" {
		req.Header.Set("X-Consul-Token", c.Token)
	}
	resp, err := client.Do(req)
	if err != nil {
		if cause := context.Cause(qctx); errors.Is(cause, errFreshConn) {
			return nil, 0, cause
		}
		return nil, 0, err
	}
	defer func() {
		// Read to the end (the JSON decoder stops before the final
		// newline), or the connection is not reused, and the next
		// blocking query would have to start over.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, 0, fmt.Errorf("consul answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	next, err = strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	if err != nil {
		return nil, 0, errors.New("consul answer has no valid X-Consul-Index header")
	}
	var entries []consulEntry
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return nil, 0, fmt.Errorf("decode consul answer: %w", err)
	}
	ts = make([]upstream.Target, 0, len(entries))
	for _, e := range entries {
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		if host == "" || e.Service.Port < 1 || e.Service.Port > 65535 {
			continue
		}
		ts = append(ts, upstream.Target{Addr: net.JoinHostPort(host, strconv.Itoa(e.Service.Port)), Weight: max(e.Service.Weights.Passing, 1), Zone: e.zone(c.ZoneMeta)})
	}
	slices.SortFunc(ts, func(a, b upstream.Target) int { return strings.Compare(a.Addr, b.Addr) })
	// The same address registered twice (two agents, two IDs) is one endpoint.
	ts = slices.CompactFunc(ts, func(a, b upstream.Target) bool { return a.Addr == b.Addr })
	return ts, next, nil
}

// backoff is the wait after the n-th consecutive failure: base doubled each
// time up to max, half of it fixed and half random, so that many sidecars
// that lost the same agent do not come back in step.
func backoff(n int, base, ceiling time.Duration) time.Duration {
	d := ceiling
	if n < 32 && base<<(n-1) < ceiling && base<<(n-1) > 0 {
		d = base << (n - 1)
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
