// Package httpproxy is the HTTP ambassador: routes matched on path, host,
// method and headers lead to weighted (optionally sticky) splits over
// clusters; each request chooses its endpoint, and failed tries are retried
// on another endpoint where that is safe, within a retry budget, a per-try
// and a route timeout, the cluster's thresholds and its circuit breaker.
//
// The wire work (hop-by-hop headers, X-Forwarded-*, WebSocket upgrades,
// trailers, streaming flushes for gRPC) is net/http/httputil's
// ReverseProxy; the choice of endpoint, retries and breakers are a
// RoundTripper under it.
package httpproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Observer receives per-request events for metrics. Any field may be nil.
type Observer struct {
	// Requests returns the recorder of finished requests of one listener,
	// route and cluster; the handler asks once per route and cluster, so
	// that a request costs no label lookups.
	Requests   func(listener, route, cluster string) func(status int, d time.Duration)
	Retry      func(cluster string)
	Overloaded func(cluster, reason string)
	// Sticky returns the counter of a sticky route's requests keyed on key
	// ("header", "cookie", "client_ip" or "pod"); asked once per route and
	// key.
	Sticky func(listener, route, key string) func()
	// JWT returns the counter of a JWT route's requests with one result
	// ("allowed", "no_token" or a refusal reason); asked once per route
	// and result, on first use.
	JWT func(listener, route, provider, result string) func()
	// RateLimit returns the counter of a rate-limited route's decisions
	// ("allowed" or "limited"); asked once per route and result.
	RateLimit func(listener, route, result string) func()
}

// Handler serves the requests of one listener generation.
type Handler struct {
	table    *Table
	proxy    *httputil.ReverseProxy
	grpc     *httputil.ReverseProxy // proxy for transcoded calls; nil: no route transcodes
	obs      Observer
	log      *slog.Logger
	access   *slog.Logger // nil: no access log
	listener string
	noRoute  func(int, time.Duration) // metrics of requests no route matched
}

// HandlerOptions configure a Handler.
type HandlerOptions struct {
	Table     *Table
	Observer  Observer
	Log       *slog.Logger
	AccessLog *slog.Logger // nil: off
}

// NewHandler returns the handler for a route table.
func NewHandler(o HandlerOptions) *Handler {
	h := &Handler{table: o.Table, obs: o.Observer, log: o.Log, access: o.AccessLog, listener: o.Table.Listener}
	if bind := o.Observer.Sticky; bind != nil {
		for _, r := range h.table.Routes {
			if r.sticky != nil && len(r.targets) > 1 {
				for k, key := range stickyKeys {
					r.sticky.counts[k] = bind(h.listener, r.Name, key)
				}
			}
		}
	}
	if bind := o.Observer.JWT; bind != nil {
		for _, r := range h.table.Routes {
			if j := r.jwt; j != nil {
				route, provider := r.Name, j.prov.cfg.Name
				j.bind = func(result string) func() { return bind(h.listener, route, provider, result) }
			}
		}
	}
	if bind := o.Observer.RateLimit; bind != nil {
		for _, r := range h.table.Routes {
			if l := r.limit; l != nil {
				l.allowed, l.limited = bind(h.listener, r.Name, "allowed"), bind(h.listener, r.Name, "limited")
			}
		}
	}
	if bind := o.Observer.Requests; bind != nil {
		h.noRoute = bind(h.listener, "", "")
		for _, r := range h.table.Routes {
			for i := range r.targets {
				r.targets[i].rec = bind(h.listener, r.Name, r.targets[i].cluster.Name())
			}
		}
	}
	h.proxy = &httputil.ReverseProxy{
		Rewrite:      h.rewrite,
		Transport:    &tries{h: h},
		ErrorHandler: h.errorResponse,
		ErrorLog:     slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
		// Without a pool ReverseProxy allocates a 32 KiB copy buffer per
		// response: most of the garbage of a small request.
		BufferPool: bufferPool{},
	}
	for _, r := range h.table.Routes {
		if r.grpc != nil {
			gp := *h.proxy
			gp.ModifyResponse = transcodeResponse
			h.grpc = &gp
			break
		}
	}
	return h
}

// bufferPool lends ReverseProxy its copy buffers.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(copyBuffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

// exchange is the state of one request through attache.
type exchange struct {
	route    *compiledRoute
	cluster  *Cluster
	key      uint64
	attempts int
	endpoint string
	err      error
	reason   string // why attache answered itself
	timedOut atomic.Bool
	stop     func() bool    // stops the route timer
	hostFrom bool           // send the endpoint's host as Host
	call     *transcodeCall // the gRPC call of a transcoded request; nil: none
}

type ctxKey struct{}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w}
	route := h.table.match(r)
	if route == nil {
		rw.Header().Set("X-Attache-Reason", "no route matched")
		http.Error(rw, fmt.Sprintf("attache: no route for %s %s", r.Method, r.URL.Path), http.StatusNotFound)
		h.done(r, rw, &exchange{reason: "no route"}, start)
		return
	}
	x := &exchange{route: route, key: balance.HashString(clientIP(r)), hostFrom: route.rewrite == nil || route.rewrite.Host == ""}
	x.hostFrom = x.hostFrom && isLoopbackHost(r.Host)
	authed := false // a token verified: the response is the user's
	if route.jwt != nil {
		// The split is picked after the check: a sticky header set from
		// a claim is then the verified one, not the client's copy.
		var ok bool
		r, ok = h.checkJWT(rw, r, x)
		x.cluster = route.pick(r)
		if !ok {
			h.done(r, rw, x, start)
			return
		}
		authed = claimsOf(r) != nil || route.jwt.prov.tokenHeader(r.Header)
	} else {
		x.cluster = route.pick(r)
	}
	if route.limit != nil && h.limitedHTTP(rw, r, x) {
		h.done(r, rw, x, start)
		return
	}
	if reason, detail := x.cluster.opts.Filter.refuse(route.upstreamPath(r.URL.Path), r.Host); reason != "" {
		h.refused(rw, x, reason, detail)
		h.done(r, rw, x, start)
		return
	}
	out := r // what goes upstream: a transcoded call, or r
	if route.grpc != nil {
		var ok bool
		if out, ok = h.transcode(rw, r, x); !ok {
			h.done(r, rw, x, start)
			return
		}
		if x.call != nil {
			defer x.call.end()
		}
	}
	// A request whose token was verified goes past the cache: the token
	// may be gone from it (forward: false), and with it what tells the
	// cache that the response is one user's. So does one that carries
	// a token header the check did not read (allow_missing, another
	// scheme): it goes upstream as it came, credentials the upstream
	// may answer for. A transcoded call is a POST.
	if route.cache != nil && !authed && x.call == nil {
		h.serveCached(rw, out, x)
	} else {
		h.forward(rw, out, x)
	}
	h.done(r, rw, x, start)
}

// forward sends r upstream as x and writes the response to w.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, x *exchange) {
	route := x.route
	var waited time.Duration // for a token of the cluster's rate limit: part of the route timeout
	if x.cluster.opts.RateLimit != nil {
		var answered bool
		if waited, answered = h.upstreamLimited(w, r, x); answered {
			return
		}
	}
	// net/http cancels an HTTP/1.x request's context when it reads the end
	// of the stream, which a client that half-closed after its request
	// sends too: it still gets its response, as on the fast path (the
	// route timeout and a failed write to the client still end it).
	// HTTP/2 cancels a stream's context on RST_STREAM: that one holds.
	parent := r.Context()
	if r.ProtoMajor == 1 {
		parent = context.WithoutCancel(parent)
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	if route.timeout > 0 {
		t := time.AfterFunc(route.timeout-waited, func() { x.timedOut.Store(true); cancel() })
		x.stop = t.Stop
		defer t.Stop()
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		r.Body = &checkedBody{ReadCloser: r.Body, r: r}
	}
	proxy := h.proxy
	if x.call != nil {
		proxy = h.grpc
	}
	proxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, ctxKey{}, x)))
}

// checkedBody is a chunked HTTP/1.x request body on the net/http path,
// held to the fast path's rules: a read error (net/http's reader refused
// a chunk or a trailer line) and a trailer field validTrailerField
// refuses are the client's errors, answered with a 400. (net/http reads
// an obs-fold in a trailer as a space, which RFC 9112 5.2 also allows.)
type checkedBody struct {
	io.ReadCloser
	r *http.Request
}

func (b *checkedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		for k, vs := range b.r.Trailer {
			for _, v := range vs {
				if !validTrailerField(k, v) {
					return n, &clientError{fmt.Errorf("trailer field %q: %w", k, errChunk)}
				}
			}
		}
	case err != nil:
		err = &clientError{err}
	}
	return n, err
}

// checkedTrailers is a response body from net/http's Transport whose
// trailers, once it has ended, are held to validTrailerField as the fast
// paths hold theirs: a refused one is a read error, which cuts the
// response (ReverseProxy aborts the app's connection) before the trailers
// are sent on.
type checkedTrailers struct {
	io.ReadCloser
	resp *http.Response
}

func (b *checkedTrailers) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		for k, vs := range b.resp.Trailer {
			for _, v := range vs {
				if !validTrailerField(k, v) {
					return n, fmt.Errorf("upstream trailer field %q: %w", k, errChunk)
				}
			}
		}
	}
	return n, err
}

// checkResponse holds a response net/http's Transport read from an
// HTTP/1.x upstream to the rules the fast path's parser applies: token
// names, values without controls, a reason without controls, HTTP/1.0 or
// 1.1 from a cleartext HTTP/1.1 cluster. (net/http already refuses bare
// CRs, LFs and NULs; it reads an obs-fold as a space, which RFC 9112 5.2
// also allows a proxy.)
func checkResponse(resp *http.Response, c *Cluster) error {
	if resp.ProtoMajor != 1 {
		if c.plainHTTP1() {
			return fmt.Errorf("malformed upstream response head: %s from an HTTP/1.1 upstream", resp.Proto)
		}
		return nil
	}
	if resp.ProtoMinor > 1 || resp.StatusCode < 100 || resp.StatusCode > 999 || !validValue(resp.Status) {
		return errors.New("malformed upstream response head: status line") // (a status under 100 would panic in WriteHeader)
	}
	for k, vs := range resp.Header {
		if !isToken(k) {
			return fmt.Errorf("malformed upstream response head: field name %q", k)
		}
		for _, v := range vs {
			if !validValue(v) {
				return fmt.Errorf("malformed upstream response head: field %q", k)
			}
		}
	}
	return nil
}

func (h *Handler) done(r *http.Request, rw *statusWriter, x *exchange, start time.Time) {
	status := rw.status
	if status == 0 {
		status = http.StatusOK
	}
	h.record(x, status, time.Since(start), rw.bytes, func() accessFields {
		return accessFields{r.Method, r.URL.Path, r.RemoteAddr, r.Header.Get("X-Request-Id")}
	})
}

// recorder is the metrics recorder of x's route and cluster.
func (h *Handler) recorder(x *exchange) func(int, time.Duration) {
	if x.route == nil {
		return h.noRoute
	}
	for i := range x.route.targets {
		if t := &x.route.targets[i]; t.cluster == x.cluster {
			return t.rec
		}
	}
	return nil
}

// accessFields are the request's own fields of an access log line.
type accessFields struct{ method, path, client, requestID string }

// record reports a finished request to metrics and the access log; fields
// is only called when there is an access log.
func (h *Handler) record(x *exchange, status int, d time.Duration, bytesOut int64, fields func() accessFields) {
	route, cluster := "", ""
	if x.route != nil {
		route, cluster = x.route.Name, x.cluster.Name()
	}
	if rec := h.recorder(x); rec != nil {
		rec(status, d)
	}
	if h.access != nil {
		f := fields()
		h.access.Info("request", "listener", h.listener, "method", f.method, "path", f.path, "route", route,
			"cluster", cluster, "endpoint", x.endpoint, "status", status, "attempts", x.attempts,
			"duration_ms", float64(d.Microseconds())/1000, "bytes_out", bytesOut, "client", f.client,
			"request_id", f.requestID, "reason", x.reason)
	}
}

// isLoopbackHost reports whether the Host the app sent names loopback: the
// app only ever calls localhost, and passing "localhost:8080" on to an
// external API is never what it means.
func isLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" || host == "" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	x := pr.In.Context().Value(ctxKey{}).(*exchange)
	out := pr.Out
	pr.SetXForwarded()
	out.URL.Scheme = x.cluster.scheme()
	out.URL.Host = x.cluster.Name() // replaced by the endpoint on each try
	out.Host = pr.In.Host
	if rw := x.route.rewrite; rw != nil {
		if rw.Host != "" {
			out.Host = rw.Host
		}
		if rw.Prefix != "" && x.route.prefix != "" {
			out.URL.Path = rw.Prefix + strings.TrimPrefix(out.URL.Path, x.route.prefix)
			out.URL.RawPath = ""
		}
	}
	if out.Header.Get("X-Request-Id") == "" {
		out.Header.Set("X-Request-Id", randomHex(16))
		pr.In.Header.Set("X-Request-Id", out.Header.Get("X-Request-Id")) // for the access log
	}
	if out.Header.Get("Traceparent") == "" {
		out.Header.Set("Traceparent", "00-"+randomHex(16)+"-"+randomHex(8)+"-01")
	}
	for _, k := range x.route.remove {
		out.Header.Del(k)
	}
	for k, v := range x.route.add {
		out.Header.Set(k, v)
	}
	for _, c := range x.cluster.opts.Credentials.Headers() {
		out.Header[c.Name] = []string{c.Value} // replaces the app's
	}
}

// randomHex returns n random bytes in hex. IDs need uniqueness, not
// secrecy: math/rand/v2's per-thread ChaCha8 avoids a getrandom system call
// per request.
func randomHex(n int) string {
	var b [16]byte
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rand.Uint64())
	}
	return hex.EncodeToString(b[:n])
}

// Errors attache answers itself; the reason goes to x-attache-reason.
var (
	errOverloaded  = errors.New("cluster over its circuit-breaking thresholds")
	errBreakerOpen = errors.New("circuit breaker open")
	errNoEndpoint  = errors.New("no healthy endpoint")
)

func (h *Handler) errorResponse(w http.ResponseWriter, r *http.Request, err error) {
	x := r.Context().Value(ctxKey{}).(*exchange)
	status, reason, over := classify(x, err, r.Context().Err() != nil)
	x.reason = reason
	h.log.Debug("request failed", "listener", h.listener, "route", x.route.Name, "cluster", x.cluster.Name(), "error", err, "status", status)
	if over {
		w.Header().Set("X-Attache-Overloaded", "true")
	}
	w.Header().Set("X-Attache-Reason", reason)
	w.Header().Set("X-Attache-Attempts", strconv.Itoa(x.attempts))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "attache: %s (cluster %s)\n", reason, x.cluster.Name())
}

// classify maps the error of a request to attache's own answer: status,
// x-attache-reason, and whether it is an overload refusal.
func classify(x *exchange, err error, clientGone bool) (status int, reason string, over bool) {
	var ce *connectError
	switch {
	case x.timedOut.Load():
		return http.StatusGatewayTimeout, "route timeout", false
	case errors.Is(err, errOverloaded):
		return http.StatusServiceUnavailable, "overloaded", true
	case errors.Is(err, errBreakerOpen):
		return http.StatusServiceUnavailable, "circuit breaker open", false
	case errors.Is(err, errNoEndpoint):
		return http.StatusServiceUnavailable, "no healthy endpoint", false
	case isClientError(err):
		return http.StatusBadRequest, "bad request body", false
	case isTimeout(err):
		return http.StatusGatewayTimeout, "upstream timeout", false
	case errors.As(err, &ce):
		return http.StatusServiceUnavailable, "upstream connect failure", false
	case errors.Is(err, context.Canceled) && clientGone:
		return 499, "client closed request", false // nginx's code; nobody reads it
	}
	return http.StatusBadGateway, "upstream reset or protocol error", false
}

// clientError is a failure of the client's side of a request (a malformed
// or cut request body): the client's fault, not the endpoint's.
type clientError struct{ err error }

func (e *clientError) Error() string { return "client: " + e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

// isClientError and isConnectError test for nil first: errors.As moves
// its target to the heap, which is an allocation per call.
func isClientError(err error) bool {
	return err != nil && asClientError(err)
}

func asClientError(err error) bool {
	var ce *clientError
	return errors.As(err, &ce)
}

func isConnectError(err error) bool {
	return err != nil && asConnectError(err)
}

func asConnectError(err error) bool {
	var ce *connectError
	return errors.As(err, &ce)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// statusWriter records the status and size of a response. Unwrap lets
// http.ResponseController (used by ReverseProxy to flush and to hijack for
// WebSocket) reach the real writer.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// retryPolicy is a compiled Retries.
type retryPolicy struct {
	attempts      int
	on5xx         bool
	onGateway     bool
	onConnect     bool
	onReset       bool
	on4xx         bool
	codes         map[int]bool
	perTry        time.Duration
	base, max     time.Duration
	budget        int
	nonIdempotent bool
	maxBuffer     int
}

func newRetryPolicy(c Retries) *retryPolicy {
	p := &retryPolicy{attempts: c.Attempts, perTry: c.PerTryTimeout.D(), base: c.Backoff.Base.D(), max: c.Backoff.Max.D(),
		budget: c.BudgetPercent, nonIdempotent: c.NonIdempotent, maxBuffer: c.MaxBuffer, codes: map[int]bool{}}
	for _, on := range c.On {
		switch on {
		case "5xx":
			p.on5xx = true
		case "gateway_error":
			p.onGateway = true
		case "connect_failure":
			p.onConnect = true
		case "reset":
			p.onReset = true
		case "retriable_4xx":
			p.on4xx = true
		default:
			n, _ := strconv.Atoi(on)
			p.codes[n] = true
		}
	}
	return p
}

// retriableStatus reports whether a response status asks for another try.
func (p *retryPolicy) retriableStatus(code int) bool {
	switch {
	case p.codes[code]:
		return true
	case p.on5xx && code >= 500:
		return true
	case p.onGateway && (code == 502 || code == 503 || code == 504):
		return true
	case p.on4xx && code == 409:
		return true
	}
	return false
}

// retriableError reports whether a transport error asks for another try.
// A per-try timeout counts as a 5xx (Envoy does the same).
func (p *retryPolicy) retriableError(err error, perTryTimedOut bool) bool {
	var ce *connectError
	switch {
	case errors.As(err, &ce):
		return p.onConnect || p.on5xx || p.onGateway
	case perTryTimedOut:
		return p.on5xx || p.onGateway
	default:
		return p.onReset || p.on5xx
	}
}

// backoff is full-jitter exponential backoff before try n (n >= 2).
func (p *retryPolicy) backoff(n int) time.Duration {
	d := p.base << (n - 2)
	if d > p.max || d <= 0 {
		d = p.max
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// idempotent methods may be retried without the route opting in. A
// request with an Idempotency-Key header is idempotent by declaration.
func idempotent(method string, h headerGetter) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return h.Get("Idempotency-Key") != "" || h.Get("X-Idempotency-Key") != ""
}

// hasIdempotencyKey reports whether h has a key the Transport takes for
// idempotency (it looks for the field's presence, empty or not).
func hasIdempotencyKey(h http.Header) bool {
	_, a := h["Idempotency-Key"]
	_, b := h["X-Idempotency-Key"]
	return a || b
}

// headerGetter is what routing and retry decisions read of request
// headers: http.Header on the net/http path, the parsed head on the fast
// path.
type headerGetter interface{ Get(string) string }

// tries is the RoundTripper under ReverseProxy: it chooses an endpoint for
// each try, enforces thresholds and the breaker, and retries.
type tries struct{ h *Handler }

func (t *tries) RoundTrip(req *http.Request) (*http.Response, error) {
	x := req.Context().Value(ctxKey{}).(*exchange)
	c := x.cluster
	policy := x.route.retry
	defer c.inflight.Add(-1)
	wait, err := t.h.admit(c)
	if err != nil {
		return nil, err
	}
	if wait && !c.slots.wait(req.Context().Done(), time.Time{}) {
		return nil, req.Context().Err()
	}
	slot := true // given back when the response body closes, or here on failure
	defer func() {
		if slot {
			c.slots.release()
		}
	}()

	// A body is replayable when there is none, or when it is read whole
	// here, under the size limit, on a route that retries. (Even a POST
	// may be retried after a connect failure, when nothing was sent; the
	// transport closes the body on any error, so it must be kept.)
	var body []byte
	replayable := req.Body == nil || req.Body == http.NoBody
	if !replayable && policy.buffers(req.ContentLength) {
		b, err := io.ReadAll(io.LimitReader(req.Body, int64(policy.maxBuffer)+1))
		if err != nil {
			return nil, err
		}
		if len(b) <= policy.maxBuffer {
			body, replayable = b, true
		} else {
			req.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(b), req.Body), req.Body}
		}
	}
	st := &stdTry{t: t, req: req, x: x, body: body, policy: policy}
	if err := t.h.runTries(x, st, policy.maxTries(replayable), idempotent(req.Method, req.Header)); err != nil {
		return nil, err
	}
	if x.stop != nil {
		x.stop() // headers are in: the route timeout is met
	}
	st.resp.Header.Set("X-Attache-Attempts", strconv.Itoa(x.attempts))
	if c.slots.max > 0 {
		st.resp.Body = &releaseBody{ReadCloser: st.resp.Body, release: c.slots.release}
		slot = false
	}
	return st.resp, nil
}

// buffers reports whether a request body of length n (-1: unknown) is read
// whole before the first try, so that it can be replayed.
func (p *retryPolicy) buffers(n int64) bool {
	return p != nil && p.attempts > 1 && n != 0 && n <= int64(p.maxBuffer)
}

// maxTries is how many tries a request may have.
func (p *retryPolicy) maxTries(replayable bool) int {
	if p == nil || !replayable {
		return 1
	}
	return p.attempts
}

// admit counts a request in flight on c (the caller always undoes it with
// c.inflight.Add(-1)) and refuses it over the thresholds. An admitted
// request holds a connection slot (wait false: the caller gives it back
// with c.slots.release at the end of the response) or is pending, counted
// in c.slots.waiting (wait true: the caller takes its slot with
// c.slots.wait, or the engine polls c.slots.tryAcquire and then leaves
// waiting, or gives up and leaves waiting).
func (h *Handler) admit(c *Cluster) (wait bool, err error) {
	lim := c.opts.Limits
	if n := c.inflight.Add(1); lim.MaxRequests > 0 && n > int64(lim.MaxRequests) {
		return false, overloaded(h.obs, c, "max_requests")
	}
	if c.slots.tryAcquire() {
		return false, nil
	}
	if w := c.slots.waiting.Add(1); lim.MaxPending > 0 && w > int64(lim.MaxPending) {
		c.slots.waiting.Add(-1)
		return false, overloaded(h.obs, c, "max_pending")
	}
	return true, nil
}

// tryer is how one wire path (net/http's or the fast path) sends a try;
// runTries decides where each try goes and whether there is another.
type tryer interface {
	// send makes try n to ep and reports the response status, or the error
	// and whether it was the per-try timeout.
	send(ep *upstream.Endpoint, n int) (status int, err error, perTryTimedOut bool)
	discard()              // drops the response of a try that is retried
	ended() bool           // the client went away or the route timed out
	sleep(d time.Duration) // backoff, cut short when the request ends
}

// runTries is the retry loop of the goroutine paths (net/http's and the
// fast path's): endpoint choice, breaker, passive outlier detection, retry
// policy, budget and backoff, all in nextTry and afterTry, which the
// event-loop engine drives asynchronously. On nil the last try's response
// is the answer; x.attempts and x.endpoint tell which.
func (h *Handler) runTries(x *exchange, t tryer, maxTries int, idem bool) error {
	var st tryState
	for {
		ep, err := h.nextTry(x, &st)
		if err != nil {
			return err
		}
		status, err, perTryTimedOut := t.send(ep, st.try)
		retry, backoff, err := h.afterTry(x, &st, ep, status, err, perTryTimedOut, maxTries, idem, t.ended())
		if !retry {
			return err
		}
		if err == nil {
			t.discard()
		}
		if st.redispatch {
			continue // at once, and not a retry
		}
		c := x.cluster
		c.retrying.Add(1)
		t.sleep(backoff)
		c.retrying.Add(-1)
	}
}

// tryState is the retry loop's memory between the tries of one request.
// Its zero value is ready for the first try; it must not be copied once
// used.
type tryState struct {
	try     int // the last try's number
	buf     [4]*upstream.Endpoint
	n       int                  // endpoints tried, in buf
	more    []*upstream.Endpoint // all of them, past len(buf)
	lastErr error
	// redispatch: the last try could not connect, so nothing of the
	// request was sent, and the next goes to another endpoint at once
	// (afterTry sets it, nextTry clears it). Redispatched tries count in
	// try (x-attache-attempts) but not against the retry policy.
	redispatch  bool
	redispatchN int // redispatches so far
	// start is when the try began (nextTry), for a balance policy that
	// learns latencies (ewma); zero otherwise.
	start time.Time
}

// tried returns the endpoints tried since the last round. (No slice of
// buf is kept in the struct: a pointer into itself would move a
// runTries' tryState to the heap.)
func (st *tryState) tried() []*upstream.Endpoint {
	if st.more != nil {
		return st.more
	}
	return st.buf[:st.n]
}

func (st *tryState) add(ep *upstream.Endpoint) {
	switch {
	case st.more != nil:
		st.more = append(st.more, ep)
	case st.n < len(st.buf):
		st.buf[st.n] = ep
		st.n++
	default:
		st.more = append(append([]*upstream.Endpoint(nil), st.buf[:]...), ep)
	}
}

// nextTry chooses the endpoint of the next try and counts it in x
// (attempts, endpoint); an error when no endpoint is healthy or the
// breaker refuses.
func (h *Handler) nextTry(x *exchange, st *tryState) (*upstream.Endpoint, error) {
	c := x.cluster
	var ep *upstream.Endpoint
	if tried := st.tried(); len(tried) == 0 {
		ep = c.opts.Upstream.Pick(x.key, nil)
	} else {
		ep = c.opts.Upstream.Pick(x.key, func(e *upstream.Endpoint) bool { return slices.Contains(tried, e) })
		if ep == nil { // all tried: go round again
			st.n, st.more = 0, nil
			ep = c.opts.Upstream.Pick(x.key, nil)
		}
	}
	if ep == nil {
		return nil, fmt.Errorf("cluster %q: %w", c.Name(), errNoEndpoint)
	}
	st.add(ep)
	if b := c.opts.Breaker; b != nil && !b.Allow() {
		if st.lastErr != nil {
			return nil, st.lastErr
		}
		return nil, errBreakerOpen
	}
	st.redispatch = false
	st.try++
	x.attempts, x.endpoint = st.try, ep.Addr
	if c.opts.Upstream.LearnsLatency() {
		st.start = time.Now()
	}
	return ep, nil
}

// afterTry records the outcome of a try to ep (breaker, outlier
// detection) and decides whether there is another: retry with the backoff
// to wait first (the caller then drops the try's response when err is
// nil, and counts itself in the cluster's retrying while it waits), or
// the end, with the error to answer (nil: the try's response is the
// answer). err is the try's own error either way. ended: the client went away or the route timed out.
//
// A try that could not connect sent nothing: it is redispatched (retry
// with st.redispatch set) to another endpoint at once, whatever the
// method, body and retry policy, outside the budget and max_retries, as
// HAProxy's option redispatch, until each endpoint was tried once (then,
// and with one endpoint, the retry policy decides); the caller then starts
// the next try without waiting or counting a retry.
func (h *Handler) afterTry(x *exchange, st *tryState, ep *upstream.Endpoint, status int, err error, perTryTimedOut bool, maxTries int, idem, ended bool) (retry bool, backoff time.Duration, _ error) {
	c := x.cluster
	policy := x.route.retry
	ok := err == nil && status < 500
	if b := c.opts.Breaker; b != nil {
		b.Done(ok)
	}
	isConnect := isConnectError(err)
	if !isConnect && !isClientError(err) {
		c.opts.Upstream.RecordResponse(ep, ok)
	}
	if !st.start.IsZero() && !isClientError(err) {
		// The time to the response head, connecting and sending included;
		// a failed try's time is a lower bound.
		c.opts.Upstream.ObserveLatency(ep, time.Since(st.start), !ok)
		st.start = time.Time{}
	}
	if isConnect && !x.timedOut.Load() && !ended && st.redispatchN < len(c.opts.Upstream.Endpoints())-1 {
		st.redispatchN++
		st.redispatch = true
		st.lastErr = err
		return true, 0, err
	}
	tries := st.try - st.redispatchN // tries the retry policy counts
	retry = tries < maxTries && !x.timedOut.Load() && !ended
	if retry {
		if err != nil {
			retry = policy.retriableError(err, perTryTimedOut) && (isConnect || idem || policy.nonIdempotent) && !isClientError(err)
		} else {
			retry = policy.retriableStatus(status) && (idem || policy.nonIdempotent)
		}
	}
	if retry && !h.budgetAllows(c, policy) {
		retry = false
	}
	if !retry {
		return false, 0, err
	}
	if err == nil {
		st.lastErr = fmt.Errorf("status %d", status)
	} else {
		st.lastErr = err
	}
	if h.obs.Retry != nil {
		h.obs.Retry(c.Name())
	}
	return true, policy.backoff(tries + 1), err
}

// stdTry is a try through net/http's Transport.
type stdTry struct {
	t      *tries
	req    *http.Request
	x      *exchange
	body   []byte
	policy *retryPolicy
	resp   *http.Response
}

func (s *stdTry) send(ep *upstream.Endpoint, _ int) (int, error, bool) {
	resp, err, perTry := s.t.try(s.req, s.x, ep, s.body, s.policy)
	if err != nil {
		return 0, err, perTry
	}
	s.resp = resp
	return resp.StatusCode, nil, false
}

func (s *stdTry) discard() {
	io.Copy(io.Discard, io.LimitReader(s.resp.Body, 64<<10))
	s.resp.Body.Close()
	s.resp = nil
}

func (s *stdTry) ended() bool { return s.req.Context().Err() != nil }

func (s *stdTry) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.req.Context().Done():
	}
}

// budgetAllows reports whether one more retry fits both the cluster's
// max_retries and the route's budget: retries in flight may not exceed
// budget_percent of requests in flight (with a floor of 3, as Envoy's
// min_retry_concurrency), so that retries cannot multiply load in an
// outage.
func (h *Handler) budgetAllows(c *Cluster, p *retryPolicy) bool {
	r := c.retrying.Load()
	if m := c.opts.Limits.MaxRetries; m > 0 && r >= int64(m) {
		if h.obs.Overloaded != nil {
			h.obs.Overloaded(c.Name(), "max_retries")
		}
		return false
	}
	allowed := max(3, c.inflight.Load()*int64(p.budget)/100)
	return r < allowed
}

func overloaded(obs Observer, c *Cluster, reason string) error {
	if obs.Overloaded != nil {
		obs.Overloaded(c.Name(), reason)
	}
	return fmt.Errorf("cluster %q: %s: %w", c.Name(), reason, errOverloaded)
}

// try sends one try to ep. The per-try timeout runs until the response
// headers arrive; the body then streams under the route's context.
func (t *tries) try(req *http.Request, x *exchange, ep *upstream.Endpoint, body []byte, p *retryPolicy) (resp *http.Response, err error, perTryTimedOut bool) {
	ctx, cancel := context.WithCancel(req.Context())
	var timedOut atomic.Bool
	var timer *time.Timer
	if p != nil && p.perTry > 0 {
		timer = time.AfterFunc(p.perTry, func() { timedOut.Store(true); cancel() })
	}
	out := req.Clone(ctx)
	out.URL.Host = ep.Addr
	if x.hostFrom {
		out.Host = hostForUpstream(ep.Addr, x.cluster.scheme())
	}
	switch {
	case body != nil:
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.ContentLength = int64(len(body))
		// The Transport may then send it again on a new connection when
		// a pooled one turns out closed (and over HTTP/2, after GOAWAY).
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	case out.Body != nil && out.Body != http.NoBody:
		// A streamed body stays open when the Transport fails before
		// sending it (a connect failure): the request is redispatched
		// with it. ReverseProxy closes it at the end.
		out.Body = io.NopCloser(out.Body)
	}
	if (out.Method == http.MethodPut || out.Method == http.MethodDelete) && !hasIdempotencyKey(out.Header) {
		// Idempotent by RFC 9110 but not by the Transport's own rule: an
		// empty key (never sent) makes it send the request again when a
		// pooled connection turns out closed, as it does for a GET.
		out.Header["Idempotency-Key"] = nil
	}
	ep.AddActive(1)
	resp, err = x.cluster.transport(ep).RoundTrip(out)
	if timer != nil {
		timer.Stop()
	}
	if err == nil {
		if err = checkResponse(resp, x.cluster); err != nil {
			resp.Body.Close() // unread: the connection closes
		} else if resp.StatusCode != http.StatusSwitchingProtocols {
			resp.Body = &checkedTrailers{ReadCloser: resp.Body, resp: resp}
		}
	}
	if err != nil {
		ep.AddActive(-1)
		cancel()
		if timedOut.Load() {
			err = fmt.Errorf("per-try timeout after %v: %w", p.perTry, context.DeadlineExceeded)
		}
		return nil, err, timedOut.Load()
	}
	resp.Body = &releaseBody{ReadCloser: resp.Body, release: func() { ep.AddActive(-1); cancel() }}
	return resp, nil, false
}

// hostForUpstream is the Host header for an endpoint: its host, with the
// port unless it is the scheme's default.
func hostForUpstream(addr, scheme string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if scheme == "https" && port == "443" || scheme == "http" && port == "80" {
		if strings.Contains(host, ":") {
			return "[" + host + "]" // an IPv6 literal (a pod's KUBERNETES_SERVICE_HOST may be one)
		}
		return host
	}
	return addr
}

// releaseBody runs release once when the body is closed.
type releaseBody struct {
	io.ReadCloser
	done    atomic.Bool
	release func()
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	if b.done.CompareAndSwap(false, true) {
		b.release()
	}
	return err
}

// Write lets ReverseProxy use the body of a 101 Switching Protocols
// response as the upstream side of a WebSocket.
func (b *releaseBody) Write(p []byte) (int, error) {
	if w, ok := b.ReadCloser.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, syscall.EBADF
}
