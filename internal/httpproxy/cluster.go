package httpproxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/breaker"
	"github.com/attache-proxy/attache/internal/credentials"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Limits are Envoy-style circuit-breaking thresholds. Each works alone;
// zero means no limit. A request over MaxConnections waits for a
// connection (pending); one over MaxPending, MaxRequests or MaxRetries is
// refused at once with 503 and x-attache-overloaded: true.
type Limits struct {
	MaxConnections int // upstream connections in use at once (requests over HTTP/2)
	MaxPending     int // requests waiting for a connection when MaxConnections are in use
	MaxRequests    int // requests in flight
	MaxRetries     int // retries in flight
}

// ClusterParams configure a Cluster.
type ClusterParams struct {
	Upstream       *upstream.Cluster
	Version        string // auto | 1.1 | 2 | h2c
	MaxIdle        int
	IdleTimeout    time.Duration
	ConnectTimeout time.Duration
	TLS            func(addr string) *tls.Config // nil: plain
	Limits         Limits
	Breaker        *breaker.Breaker // nil: no classic breaker
	// Credentials are set on every request, replacing the app's headers
	// of the same names; nil: none.
	Credentials *credentials.Set
	// Filter refuses requests by path and Host (kubernetes_api); nil: none.
	Filter *Filter
	// RateLimit limits the requests sent to the cluster; nil: none.
	RateLimit *UpstreamLimit
}

// Cluster is the HTTP side of an upstream cluster: one connection pool
// (http.Transport) per endpoint, so that each request chooses its endpoint
// and a retry can go to another one, plus the cluster's in-flight counters,
// thresholds and breaker. Safe for concurrent use.
type Cluster struct {
	opts ClusterParams

	mu         sync.Mutex
	transports map[string]*transport            // net/http's, per endpoint address
	pools      map[*upstream.Endpoint]*connPool // the fast path's, per endpoint

	inflight atomic.Int64 // admitted requests, pending ones included
	retrying atomic.Int64
	slots    connSlots // max_connections and the requests pending for one
}

// NewCluster returns the HTTP side of opts.Upstream.
func NewCluster(opts ClusterParams) *Cluster {
	c := &Cluster{opts: opts, transports: map[string]*transport{}, pools: map[*upstream.Endpoint]*connPool{}}
	c.slots.max = int64(opts.Limits.MaxConnections)
	return c
}

// Name returns the cluster name.
func (c *Cluster) Name() string { return c.opts.Upstream.Name() }

// Breaker returns the classic breaker, or nil.
func (c *Cluster) Breaker() *breaker.Breaker { return c.opts.Breaker }

// Close drops idle pooled connections.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.transports {
		t.t.CloseIdleConnections()
	}
	for _, p := range c.pools {
		p.close()
	}
}

// plainHTTP1 reports whether the cluster speaks cleartext HTTP/1.1, which
// the fast path's own connection pools serve. A filtered cluster (the
// Kubernetes API, always TLS anyway) is left to the net/http path, which
// alone applies the filter.
func (c *Cluster) plainHTTP1() bool {
	return c.opts.TLS == nil && c.opts.Filter == nil && (c.opts.Version == "" || c.opts.Version == "auto" || c.opts.Version == "1.1")
}

// pool returns the fast path's connection pool of ep, dropping pools of
// endpoints that are gone.
func (c *Cluster) pool(ep *upstream.Endpoint) *connPool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.poolLocked(ep)
}

// budget returns ep's idle budget (see idleBudget), which its connPool
// holds.
func (c *Cluster) budget(ep *upstream.Endpoint) *idleBudget { return c.pool(ep).budget }

// poolLocked is pool with c.mu held.
func (c *Cluster) poolLocked(ep *upstream.Endpoint) *connPool {
	if p := c.pools[ep]; p != nil {
		return p
	}
	if len(c.pools) > 2*len(c.opts.Upstream.Endpoints())+4 {
		live := map[*upstream.Endpoint]bool{}
		for _, e := range c.opts.Upstream.Endpoints() {
			live[e] = true
		}
		for e, p := range c.pools {
			if !live[e] {
				p.close()
				delete(c.pools, e)
			}
		}
	}
	p := &connPool{ep: ep, up: c.opts.Upstream, budget: &idleBudget{max: int64(c.opts.MaxIdle)}, idle: c.opts.IdleTimeout,
		dialer: net.Dialer{Timeout: c.opts.ConnectTimeout, KeepAlive: 30 * time.Second}}
	c.pools[ep] = p
	return p
}

// connectError marks a failure to reach the endpoint: nothing was sent.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// transport returns the pool of one endpoint, creating it on first use and
// dropping pools of endpoints that are gone. For a cleartext HTTP/1.1
// cluster, which the fast paths serve too, its idle connections count
// against the endpoint's idleBudget (see countIdle).
func (c *Cluster) transport(ep *upstream.Endpoint) http.RoundTripper {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.transports[ep.Addr]; t != nil {
		return t.rt
	}
	if len(c.transports) > 2*len(c.opts.Upstream.Endpoints())+4 {
		live := map[string]bool{}
		for _, e := range c.opts.Upstream.Endpoints() {
			live[e.Addr] = true
		}
		for a, t := range c.transports {
			if !live[a] {
				t.t.CloseIdleConnections()
				delete(c.transports, a)
			}
		}
	}
	addr := ep.Addr
	up := c.opts.Upstream
	dialer := &net.Dialer{Timeout: c.opts.ConnectTimeout, KeepAlive: 30 * time.Second}
	var budget *idleBudget // cleartext HTTP/1.1: the endpoint's, shared with the fast paths
	if c.plainHTTP1() {
		budget = c.poolLocked(ep).budget
	}
	dial := func(ctx context.Context) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		up.RecordConnect(ep, err)
		if err != nil {
			return nil, &connectError{err}
		}
		if budget != nil {
			return &idleConn{Conn: conn, budget: budget}, nil
		}
		return conn, nil
	}
	t := &http.Transport{
		MaxIdleConnsPerHost: c.opts.MaxIdle,
		IdleConnTimeout:     c.opts.IdleTimeout,
		// A proxy passes Accept-Encoding and bodies through untouched.
		DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		Protocols: new(http.Protocols),
	}
	switch c.opts.Version {
	case "1.1":
		t.Protocols.SetHTTP1(true)
	case "2":
		t.Protocols.SetHTTP2(true)
	case "h2c":
		t.Protocols.SetUnencryptedHTTP2(true)
	default:
		t.Protocols.SetHTTP1(true)
		t.Protocols.SetHTTP2(true)
	}
	if c.opts.TLS != nil {
		tlsFor := c.opts.TLS
		next := []string{"http/1.1"}
		switch c.opts.Version {
		case "2":
			next = []string{"h2"}
		case "auto":
			next = []string{"h2", "http/1.1"}
		}
		t.ForceAttemptHTTP2 = c.opts.Version != "1.1"
		// The handshake is ours, with the configuration current at dial
		// time, so that rotated certificates and CAs apply to new
		// connections.
		t.DialTLSContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			cfg := tlsFor(addr)
			cfg.NextProtos = next
			tc := tls.Client(conn, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				conn.Close()
				up.RecordConnect(ep, err)
				return nil, &connectError{err}
			}
			return tc, nil
		}
	}
	et := &transport{t: t, rt: t}
	if budget != nil {
		et.rt = &countIdle{t: t, budget: budget}
	}
	c.transports[addr] = et
	return et.rt
}

// transport is net/http's Transport of one endpoint, and the
// RoundTripper requests take (countIdle for cleartext HTTP/1.1).
type transport struct {
	t  *http.Transport
	rt http.RoundTripper
}

// countIdle is the Transport of a cleartext HTTP/1.1 endpoint, whose idle
// connections count against the endpoint's idleBudget with the fast
// paths'. The Transport owns its idle list and says nothing of it but
// through httptrace: PutIdleConn after a connection went idle (then it
// takes a place of the budget, or is closed when none is left, which
// takes it out of the Transport's list) and GotConn with WasIdle when one
// is reused (it gives its place back). So the Transport's
// MaxIdleConnsPerHost is only its own ceiling; the budget is the bound.
type countIdle struct {
	t      *http.Transport
	budget *idleBudget
}

func (ci *countIdle) RoundTrip(req *http.Request) (*http.Response, error) {
	var got atomic.Pointer[idleConn] // the connection of this request
	trace := &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			ic, ok := i.Conn.(*idleConn)
			if !ok {
				return
			}
			got.Store(ic)
			if i.WasIdle {
				ic.leaveIdle()
			}
		},
		PutIdleConn: func(err error) {
			if ic := got.Load(); ic != nil && err == nil {
				ic.enterIdle()
			}
		},
	}
	return ci.t.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
}

// idleConn is a connection of a countIdle Transport: it holds a place of
// the budget while idle in the Transport's list, and gives it back when
// taken out of it or closed.
type idleConn struct {
	net.Conn
	budget *idleBudget

	mu     sync.Mutex
	held   int // places taken (1 while idle)
	owed   int // reuses reported before the PutIdleConn that preceded them
	closed bool
}

// enterIdle: the Transport put the connection in its idle list.
func (c *idleConn) enterIdle() {
	c.mu.Lock()
	switch {
	case c.closed:
	case c.owed > 0: // taken again already (the trace reported that first)
		c.owed--
	case c.budget.take():
		c.held++
	default:
		c.mu.Unlock()
		c.Close() // no place: the Transport drops it
		return
	}
	c.mu.Unlock()
}

// leaveIdle: the Transport took the connection from its idle list.
func (c *idleConn) leaveIdle() {
	c.mu.Lock()
	switch {
	case c.closed:
	case c.held > 0:
		c.held--
		c.budget.give()
	default:
		c.owed++
	}
	c.mu.Unlock()
}

func (c *idleConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		for ; c.held > 0; c.held-- {
			c.budget.give()
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// scheme is the URL scheme for requests to the cluster.
func (c *Cluster) scheme() string {
	if c.opts.TLS != nil {
		return "https"
	}
	return "http"
}
