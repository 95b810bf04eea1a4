package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/rawsys"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Buffer sizes of an app connection on the fast path: a request head that
// does not fit the read buffer goes to net/http, which allows more.
const (
	cliReadBuf  = 4 << 10
	cliWriteBuf = 8 << 10
	// largeBody is the size from which a body waiting in the upstream
	// buffer is sent along with the head rather than copied.
	largeBody = 4 << 10
	// maxDiscard is how much of an unread request body is read away to
	// keep the connection (net/http's figure); beyond it the connection
	// closes.
	maxDiscard = 256 << 10
)

// States of a fast connection, for draining.
const (
	connNew    int32 = iota // no request yet: never closed by a drain
	connIdle                // between requests: a drain closes it
	connActive              // serving a request
	connClosed              // closed by a drain
)

// fastConn is one app connection served by the fast path: plain HTTP/1.1
// keep-alive requests parsed in place, forwarded over the fast path's own
// upstream pools. Its methods that implement tryer serve runTries.
type fastConn struct {
	s      *Server
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	out    *outWriter // under bw
	remote string     // RemoteAddr
	proto  string     // X-Forwarded-Proto: "http", or "https" over TLS
	ip     string
	peer   netip.Addr // the app's address, for sticky splits
	key    uint64     // balance key: hash of the client IP
	state  atomic.Int32

	readDeadline lazyDeadline
	slowHead     func()    // sets the read deadline for the rest of a head
	headTimed    bool      // slowHead set it for this head
	headStart    time.Time // when the pending head began (the accept, for the first); zero: none
	large        []byte    // a head too large for br, read whole to be checked before net/http takes it

	// Host of the previous request and whether it is loopback: the same on
	// every request of a connection, and net.ParseIP allocates.
	lastHost     string
	lastLoopback bool

	// The request in progress.
	h          *Handler
	req        reqHead
	x          exchange
	start      time.Time
	end        time.Time // of the last request
	deadline   time.Time // route timeout; zero: none
	body       bodyState
	buf        []byte // a body read whole for retries
	buffered   bool   // buf is the whole body
	closeAfter bool
	ids        reqIDs
	bytesOut   int64

	// The response of the last try.
	up        *upConn
	upPool    *connPool
	idleUp    *upConn // done with, for upPool once the request has ended
	upEp      *upstream.Endpoint
	resp      respHead
	respLen   int  // bytes of the response head in up.br, blank line included
	upBroken  bool // the request was not sent whole: do not reuse up
	emptyRead bool // the last try failed before any response byte arrived
}

// bodyState tracks the request body as it is read from the app.
type bodyState struct {
	chunked bool
	left    int64 // unread bytes of the body, or of the current chunk
	inChunk bool  // chunked: a chunk's size line was read, left of it remain
	done    bool
	sent100 bool
}

// newFastConn starts the fast path of c, whose first bytes, already read
// (by the engine), are pre; the head pending in them, or the first head,
// began at headStart (zero: none pending).
func newFastConn(s *Server, c net.Conn, pre []byte, headStart time.Time) *fastConn {
	src := rawsys.NewReader(c)
	if len(pre) > 0 {
		src = io.MultiReader(bytes.NewReader(pre), src)
	}
	fc := &fastConn{s: s, c: c, br: bufio.NewReaderSize(src, cliReadBuf), out: &outWriter{w: rawsys.NewWriter(c)}}
	fc.bw = bufio.NewWriterSize(fc.out, cliWriteBuf)
	fc.remote, fc.proto = c.RemoteAddr().String(), "http"
	fc.ip, fc.peer, fc.key = clientKeys(fc.remote)
	fc.state.Store(connNew)
	fc.headStart = headStart
	// A head that has begun (and the first one, from the accept) must
	// arrive within net/http's ReadHeaderTimeout, whatever the idle
	// timeout.
	fc.slowHead = func() {
		if !fc.headTimed {
			fc.headTimed = true
			if fc.headStart.IsZero() {
				fc.headStart = time.Now()
			}
			fc.setReadDeadline(fc.headStart.Add(s.headerTimeout))
		}
	}
	return fc
}

// clientKeys are what routing and balancing key on of an app at remote:
// its IP, its address for sticky splits, and the balance key (the IP's
// hash).
func clientKeys(remote string) (ip string, peer netip.Addr, key uint64) {
	ip = remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		ip = h
	}
	return ip, peerAddr(remote), balance.HashString(ip)
}

// readHeaderTimeout bounds the arrival of a request head once it has
// begun, and of the first one from the accept (a connection that sends
// nothing is closed then, not after idle_timeout), as the net/http
// server's ReadHeaderTimeout and HAProxy's timeout http-request do. The
// deadline of a head carries over a hand-off from one path to the next.
const readHeaderTimeout = 30 * time.Second

// serve runs the connection's requests until it closes, or until a request
// is for net/http, which then takes the connection with what was read.
func (fc *fastConn) serve() (handedOff bool) {
	for {
		if fc.br.Buffered() == 0 {
			if fc.state.Load() == connActive {
				fc.state.Store(connIdle)
			}
			// A drain closes idle connections; one that was still
			// finishing its response when the drain began closes itself
			// here. (State is stored before draining is read, and Drain
			// stores draining before it looks for idle ones: one of the
			// two sees the other.)
			if (fc.s.closing.Load() || fc.s.draining.Load()) && fc.state.Load() != connNew {
				return false
			}
			if !fc.headStart.IsZero() { // no request yet: the first head is due
				fc.setReadDeadline(fc.headStart.Add(fc.s.headerTimeout))
			} else if fc.s.idle > 0 {
				now := fc.end // the end of the last request: a clock read spared
				if now.IsZero() {
					now = time.Now()
				}
				fc.setReadDeadline(now.Add(fc.s.idle))
			} else {
				fc.setReadDeadline(time.Time{})
			}
			if _, err := fc.br.Peek(1); err != nil {
				return false
			}
			if !fc.state.CompareAndSwap(connIdle, connActive) && !fc.state.CompareAndSwap(connNew, connActive) {
				return false // closed by a drain
			}
		}
		fc.headTimed = false
		n, bare, err := readHead(fc.br, fc.slowHead)
		if errors.Is(err, bufio.ErrBufferFull) {
			if fc.headStart.IsZero() {
				fc.headStart = time.Now() // net/http reads the rest by this head's deadline
			}
			return fc.checkLargeHead()
		}
		if err != nil {
			return false
		}
		b, _ := fc.br.Peek(n)
		var v verdict
		var why string
		if bare {
			v, why = fc.req.parseBare(b) // checked here too: only net/http serves it
		} else {
			v, why = fc.req.parse(string(b))
		}
		if v == reject {
			fc.badRequest(why, b)
			return false
		}
		h := fc.s.handler.Load()
		if h == nil { // not configured yet: net/http's way
			return true
		}
		var route *compiledRoute
		if v == serveFast {
			route = h.table.matchFields(fc.req.method, fc.req.path, fc.req.host, &fc.req)
		}
		if v == handOff || route != nil && !route.fast {
			return true
		}
		fc.br.Discard(n + 2)
		fc.headStart = time.Time{}
		if fc.req.chunked || fc.req.length > 0 {
			fc.setReadDeadline(time.Time{}) // a body may take its time
		}
		if !fc.serveRequest(h, route) {
			return false
		}
	}
}

// maxLargeHead is the most of a head too large for the fast path that is
// read to be checked: net/http's DefaultMaxHeaderBytes and the 4 KiB it
// allows over it. A longer head goes on unread: net/http answers 431.
const maxLargeHead = http.DefaultMaxHeaderBytes + 4<<10

// checkLargeHead reads a head that does not fit br whole into fc.large,
// by its read-header deadline, and checks it as any other before net/http
// takes it with those bytes (true), or answers a 400 (false: close).
func (fc *fastConn) checkLargeHead() bool {
	b, _ := fc.br.Peek(fc.br.Buffered())
	fc.large = append(make([]byte, 0, 2*len(b)), b...)
	fc.br.Discard(len(b))
	for from := 0; ; {
		n, bare := headEnd(fc.large[from:])
		if n >= 0 {
			n += from
			var v verdict
			var why string
			if bare {
				v, why = fc.req.parseBare(fc.large[:n])
			} else {
				v, why = fc.req.parse(string(fc.large[:n]))
			}
			fc.req = reqHead{} // its fields are large: not kept
			if v == reject {
				fc.badRequest(why, fc.large[:n])
				return false
			}
			return true
		}
		if len(fc.large) >= maxLargeHead {
			return true
		}
		// The end searched for again from the last 3 bytes, which may
		// begin it: O(n) over a head sent a byte at a time.
		from = max(0, len(fc.large)-3)
		fc.slowHead()
		fc.large = slices.Grow(fc.large, 4<<10)
		m, err := fc.br.Read(fc.large[len(fc.large):cap(fc.large)])
		fc.large = fc.large[:len(fc.large)+m]
		if err != nil {
			return false
		}
	}
}

// setReadDeadline sets the app connection's read deadline (zero: none),
// or leaves one at most a second earlier than d: the idle timeout need not
// be exact to the millisecond, and resetting it per request costs.
func (fc *fastConn) setReadDeadline(d time.Time) {
	fc.readDeadline.set(d, time.Second, fc.c.SetReadDeadline)
}

// readHead waits until br holds a whole head and returns its length (see
// headEnd); bufio.ErrBufferFull when it does not fit. slow, if not nil, is
// called before each wait for more of a head that has begun.
func readHead(br *bufio.Reader, slow func()) (n int, bare bool, err error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if n, bare := headEnd(b); n >= 0 {
			return n, bare, nil
		}
		if br.Buffered() >= br.Size() {
			return 0, false, bufio.ErrBufferFull
		}
		if slow != nil {
			slow()
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return 0, false, err
		}
	}
}

// serveRequest answers the parsed request; false: close the connection.
func (fc *fastConn) serveRequest(h *Handler, route *compiledRoute) bool {
	r := &fc.req
	fc.start = time.Now()
	fc.h, fc.bytesOut, fc.ids.gen, fc.buffered = h, 0, false, false
	fc.body = bodyState{chunked: r.chunked, left: max(r.length, 0), done: !r.chunked && r.length <= 0}
	x := &fc.x
	x.route, x.cluster, x.attempts, x.endpoint, x.err, x.reason, x.stop = route, nil, 0, "", nil, "", nil
	x.timedOut.Store(false)
	fc.closeAfter = r.close || fc.s.draining.Load()
	var status int
	if route == nil {
		x.reason = "no route"
		status = fc.writeError(http.StatusNotFound, "no route matched", false, false, noRouteMessage(r))
	} else {
		status = fc.proxy(route)
	}
	if !fc.body.done && !fc.closeAfter && !fc.discardBody() {
		fc.closeAfter = true
	}
	if err := fc.bw.Flush(); err != nil {
		fc.closeAfter = true
	}
	fc.end = time.Now()
	if fc.idleUp != nil {
		fc.upPool.put(fc.idleUp, fc.end)
		fc.idleUp = nil
	}
	h.record(x, status, fc.end.Sub(fc.start), fc.bytesOut, fc.accessFields)
	if cap(fc.buf) > 16<<10 {
		fc.buf = nil // an occasional large body does not stay with the connection
	}
	return !fc.closeAfter
}

func (fc *fastConn) accessFields() accessFields {
	return accessFields{fc.req.method, fc.req.path, fc.remote, fc.ids.requestID(&fc.req)}
}

// proxy forwards the request through the route and relays the answer; it
// returns the status sent.
func (fc *fastConn) proxy(route *compiledRoute) int {
	r, x, h := &fc.req, &fc.x, fc.h
	x.cluster = route.pickFor(r, fc.peer)
	x.key = fc.key
	if r.host != fc.lastHost || fc.lastHost == "" {
		fc.lastHost, fc.lastLoopback = r.host, isLoopbackHost(r.host)
	}
	x.hostFrom = (route.rewrite == nil || route.rewrite.Host == "") && fc.lastLoopback
	if route.limit != nil {
		if status, limited := fc.rateLimited(route); limited {
			return status
		}
	}
	fc.deadline = time.Time{}
	if route.timeout > 0 {
		fc.deadline = fc.start.Add(route.timeout)
	}
	c := x.cluster
	defer c.inflight.Add(-1)
	wait, err := h.admit(c)
	if err != nil {
		return fc.fail(err)
	}
	if wait && !c.slots.wait(nil, fc.deadline) {
		x.timedOut.Store(true)
		return fc.fail(fmt.Errorf("waiting for a connection: %w", context.DeadlineExceeded))
	}
	defer c.slots.release()
	policy := route.retry
	replayable := fc.body.done
	length := r.length
	if r.chunked {
		length = -1
	}
	if !replayable && policy.buffers(length) {
		var err error
		if replayable, err = fc.bufferBody(policy.maxBuffer); err != nil {
			return fc.fail(err)
		}
		fc.buffered = replayable
	}
	if err := h.runTries(x, fc, policy.maxTries(replayable), idempotent(r.method, r)); err != nil {
		return fc.fail(err)
	}
	return fc.relay()
}

// pickFor is Route.pick for the fast path and the engine, with the same
// sticky keys; peer is the application's address.
func (rt *compiledRoute) pickFor(r *reqHead, peer netip.Addr) *Cluster {
	if len(rt.targets) == 1 {
		return rt.targets[0].cluster
	}
	s := rt.sticky
	if s == nil {
		return rt.inBucket(rand.IntN(buckets))
	}
	switch s.by {
	case "header":
		if v := r.Get(s.name); v != "" {
			return rt.inBucket(int(s.counted(keyHeader, hashKey("h:", v)) % buckets))
		}
	case "cookie":
		if v := r.cookie(s.name); v != "" {
			return rt.inBucket(int(s.counted(keyCookie, hashKey("c:", v)) % buckets))
		}
	}
	var buf [4]string
	lines := buf[:0]
	for i := range r.fields {
		if strings.EqualFold(r.fields[i].name, s.trust.header) {
			lines = append(lines, r.fields[i].value)
		}
	}
	return rt.inBucket(int(s.userHash(peer, lines) % buckets))
}

// cookie returns the value of a request cookie, as Request.Cookie.
func (h *reqHead) cookie(name string) string {
	for i := range h.fields {
		if !strings.EqualFold(h.fields[i].name, "Cookie") {
			continue
		}
		for part := range strings.SplitSeq(h.fields[i].value, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok && k == name {
				if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				return v
			}
		}
	}
	return ""
}

// fail answers a request attache could not forward.
func (fc *fastConn) fail(err error) int {
	x := &fc.x
	status, reason, over := classify(x, err, false)
	x.reason = reason
	fc.h.log.Debug("request failed", "listener", fc.h.listener, "route", x.route.Name, "cluster", x.cluster.Name(), "error", err, "status", status)
	if isClientError(err) {
		fc.closeAfter = true
	}
	return fc.writeError(status, reason, over, true, failMessage(reason, x))
}

// writeError writes attache's own response.
func (fc *fastConn) writeError(status int, reason string, over, attempts bool, msg string) int {
	n := -1
	if attempts {
		n = fc.x.attempts
	}
	head := fc.req.method == http.MethodHead
	fc.bw.Write(appendError(fc.bw.AvailableBuffer(), status, reason, over, n, fc.closeAfter, fc.req.http10, head, msg))
	if !head {
		fc.bytesOut += int64(len(msg))
	}
	return status
}

// badRequest answers a malformed request, whose head is head; the
// connection then closes. A head that is not HTTP at all gets no answer
// (see notHTTP).
func (fc *fastConn) badRequest(why string, head []byte) {
	if notHTTP(head) {
		return
	}
	fc.bw.Write(appendBadRequest(fc.bw.AvailableBuffer(), why))
	fc.bw.Flush()
	fc.h = fc.s.handler.Load()
	if fc.h != nil {
		fc.h.log.Debug("malformed request", "listener", fc.h.listener, "client", fc.remote, "reason", why)
	}
}

// send implements tryer: one try to ep over a pooled connection. A pooled
// connection the upstream had closed (nothing came back) is replaced
// transparently when the request can be sent again.
func (fc *fastConn) send(ep *upstream.Endpoint, _ int) (int, error, bool) {
	x := &fc.x
	policy := x.route.retry
	pool := x.cluster.pool(ep)
	deadline, perTry := fc.deadline, time.Time{}
	if policy != nil && policy.perTry > 0 {
		perTry = time.Now().Add(policy.perTry)
		if deadline.IsZero() || perTry.Before(deadline) {
			deadline = perTry
		}
	}
	ep.AddActive(1)
	for {
		uc, reused, err := pool.get(fc.start, deadline, !idempotent(fc.req.method, &fc.req))
		if err != nil {
			ep.AddActive(-1)
			return 0, err, false
		}
		uc.setDeadline(deadline)
		fc.upBroken, fc.emptyRead = false, false
		werr := fc.writeRequest(uc, ep)
		var rerr error
		if !isClientError(werr) {
			rerr = fc.readResponse(uc) // even after a failed write: the upstream may have answered early
		}
		if rerr == nil && !isClientError(werr) {
			fc.upBroken = werr != nil
			fc.up, fc.upPool, fc.upEp = uc, pool, ep
			return fc.resp.status, nil, false
		}
		uc.c.Close()
		err = werr
		if err == nil {
			err = rerr
		}
		if reused && fc.emptyRead && !isTimeout(err) && !isClientError(err) && (fc.body.done && !fc.req.chunked && fc.req.length <= 0 || fc.buffered) && idempotent(fc.req.method, &fc.req) {
			continue
		}
		ep.AddActive(-1)
		if isTimeout(err) {
			if !fc.deadline.IsZero() && !time.Now().Before(fc.deadline) {
				x.timedOut.Store(true)
			} else if !perTry.IsZero() {
				return 0, fmt.Errorf("per-try timeout after %v: %w", policy.perTry, context.DeadlineExceeded), true
			}
		}
		return 0, err, false
	}
}

// discard implements tryer: the response of a try that is retried is
// dropped with its connection.
func (fc *fastConn) discard() {
	fc.up.c.Close()
	fc.upEp.AddActive(-1)
	fc.up = nil
}

// ended implements tryer.
func (fc *fastConn) ended() bool {
	if !fc.deadline.IsZero() && !time.Now().Before(fc.deadline) {
		fc.x.timedOut.Store(true)
		return true
	}
	return false
}

// sleep implements tryer.
func (fc *fastConn) sleep(d time.Duration) {
	if !fc.deadline.IsZero() {
		d = min(d, time.Until(fc.deadline))
	}
	if d > 0 {
		time.Sleep(d)
	}
}

// writeRequest sends the request head with attache's edits, and the body.
// Errors reading the app's side are clientErrors.
func (fc *fastConn) writeRequest(uc *upConn, ep *upstream.Endpoint) error {
	r, w := &fc.req, uc.bw
	framing := r.length
	switch {
	case fc.buffered:
		framing = int64(len(fc.buf))
	case fc.body.done:
		framing = framingNone
	case r.chunked:
		framing = framingChunked
	}
	w.Write(appendRequestHead(w.AvailableBuffer(), r, &fc.x, ep.Addr, fc.ip, fc.proto, &fc.ids, framing))
	switch {
	case fc.buffered:
		w.Write(fc.buf)
	case fc.body.done:
	case r.chunked:
		if err := fc.streamChunked(w); err != nil {
			return err
		}
	default:
		if err := fc.continue100(); err != nil {
			return err
		}
		n, rerr, werr := copyN(w, fc.br, fc.body.left, false)
		fc.body.left -= n
		if rerr != nil {
			return &clientError{rerr}
		}
		if werr != nil {
			return werr
		}
		fc.body.done = true
	}
	return w.Flush()
}

// edits reports whether the route removes or sets a header.
func (rt *compiledRoute) edits(name string) bool {
	for _, k := range rt.remove {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	for k := range rt.add {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

func headerHasToken(v, token string) bool {
	for t := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(trimOWS(t), token) {
			return true
		}
	}
	return false
}

func putRandom(b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rand.Uint64())
	}
}

// readResponse reads the response head of the try into fc.resp, skipping
// interim 1xx responses.
func (fc *fastConn) readResponse(uc *upConn) error {
	for {
		n, bare, err := readHead(uc.br, nil)
		if err != nil {
			fc.emptyRead = uc.br.Buffered() == 0
			if errors.Is(err, bufio.ErrBufferFull) {
				return errors.New("upstream response head too large")
			}
			return err
		}
		head, _ := uc.br.Peek(n)
		if bare || !fc.resp.parse(head) {
			return errors.New("malformed upstream response head")
		}
		if fc.resp.status >= 200 {
			fc.respLen = n + 2
			return nil
		}
		if fc.resp.status == http.StatusSwitchingProtocols {
			return errors.New("upstream switched protocols unasked")
		}
		uc.br.Discard(n + 2)
	}
}

// relay sends the response of the last try to the app and returns the
// upstream connection to its pool when the exchange ended cleanly.
func (fc *fastConn) relay() int {
	uc, rh, r, w := fc.up, &fc.resp, &fc.req, fc.bw
	mode := framingOf(rh, r.method)
	chunkOut := (mode == bodyChunked || mode == bodyUntilClose) && !r.http10
	if (mode == bodyChunked || mode == bodyUntilClose) && r.http10 {
		fc.closeAfter = true
	}
	w.Write(appendResponseHead(w.AvailableBuffer(), rh, chunkOut, fc.x.attempts, fc.closeAfter, r.http10))
	uc.br.Discard(fc.respLen)
	if mode != bodyNone && (mode != bodyLength || int64(uc.br.Buffered()) < rh.length) {
		uc.setDeadline(time.Time{}) // timeouts run until the response head: a body may take its time
	}
	var err error
	reuse := !rh.close && !fc.upBroken
	switch mode {
	case bodyLength:
		left := rh.length
		// A large body already waiting in the upstream buffer goes out
		// with the head in one write, not copied into bw.
		if b := uc.br.Buffered(); b >= largeBody && w.Buffered() > 0 {
			chunk, _ := uc.br.Peek(int(min(int64(b), left)))
			fc.out.tail = chunk
			err = w.Flush()
			uc.br.Discard(fc.out.tailN)
			left -= int64(fc.out.tailN)
			fc.bytesOut += int64(fc.out.tailN)
		}
		if err == nil {
			var n int64
			n, err, _ = copyN(w, uc.br, left, false)
			fc.bytesOut += n
		}
		if err == nil {
			err = w.Flush() // (copyN's write errors show here too)
		}
	case bodyChunked:
		err = relayChunks(w, uc.br, chunkOut, &fc.bytesOut)
	case bodyUntilClose:
		reuse = false
		err = fc.copyUntilClose(uc, chunkOut)
	}
	if err != nil {
		reuse = false
		fc.closeAfter = true
	}
	fc.releaseUp(reuse && uc.br.Buffered() == 0)
	return rh.status
}

func (fc *fastConn) releaseUp(reuse bool) {
	if reuse {
		fc.idleUp = fc.up // pooled when the request ends, with the time read then
	} else {
		fc.up.c.Close()
	}
	fc.upEp.AddActive(-1)
	fc.up = nil
}

// copyUntilClose relays a body delimited by the end of the connection.
func (fc *fastConn) copyUntilClose(uc *upConn, chunked bool) error {
	w := fc.bw
	for {
		if uc.br.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
			if _, err := uc.br.Peek(1); err != nil {
				if err == io.EOF {
					if chunked {
						w.WriteString("0\r\n\r\n")
					}
					return nil
				}
				return err
			}
		}
		b, _ := uc.br.Peek(uc.br.Buffered())
		if chunked {
			w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(b)), 16))
			w.WriteString("\r\n")
		}
		w.Write(b)
		if chunked {
			w.WriteString("\r\n")
		}
		uc.br.Discard(len(b))
		fc.bytesOut += int64(len(b))
	}
}

// continue100 tells an app that sent Expect: 100-continue to send its body.
func (fc *fastConn) continue100() error {
	if !fc.req.expect || fc.body.sent100 {
		return nil
	}
	fc.body.sent100 = true
	fc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	if err := fc.bw.Flush(); err != nil {
		return &clientError{err}
	}
	return nil
}

// bufferBody reads the request body into fc.buf while it fits limit; false
// when it does not (fc.buf then holds what was read: a chunked body whose
// next chunk would pass the limit).
func (fc *fastConn) bufferBody(limit int) (bool, error) {
	if err := fc.continue100(); err != nil {
		return false, err
	}
	fc.buf = fc.buf[:0]
	if !fc.body.chunked {
		n := int(fc.body.left)
		if cap(fc.buf) < n {
			fc.buf = make([]byte, 0, n)
		}
		fc.buf = fc.buf[:n]
		if _, err := io.ReadFull(fc.br, fc.buf); err != nil {
			return false, &clientError{err}
		}
		fc.body.left, fc.body.done = 0, true
		return true, nil
	}
	for {
		size, err := readChunkSize(fc.br)
		if err != nil {
			return false, &clientError{err}
		}
		if size == 0 {
			if err := skipTrailers(fc.br, nil); err != nil {
				return false, &clientError{err}
			}
			fc.body.done = true
			return true, nil
		}
		if int64(len(fc.buf))+size > int64(limit) {
			fc.body.left, fc.body.inChunk = size, true
			return false, nil
		}
		fc.buf = append(fc.buf, make([]byte, size)...)
		if _, err := io.ReadFull(fc.br, fc.buf[len(fc.buf)-int(size):]); err != nil {
			return false, &clientError{err}
		}
		if err := readCRLF(fc.br); err != nil {
			return false, &clientError{err}
		}
	}
}

// streamChunked forwards a chunked request body (after what bufferBody
// kept, if anything) re-chunked, checking its framing.
func (fc *fastConn) streamChunked(w *bufio.Writer) error {
	if err := fc.continue100(); err != nil {
		return err
	}
	if len(fc.buf) > 0 {
		w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(fc.buf)), 16))
		w.WriteString("\r\n")
		w.Write(fc.buf)
		w.WriteString("\r\n")
		fc.buf = fc.buf[:0]
	}
	for {
		if !fc.body.inChunk {
			if fc.br.Buffered() == 0 {
				if err := w.Flush(); err != nil {
					return err
				}
			}
			size, err := readChunkSize(fc.br)
			if err != nil {
				return &clientError{err}
			}
			if size == 0 {
				w.WriteString("0\r\n")
				if err := skipTrailers(fc.br, w); err != nil {
					return &clientError{err}
				}
				w.WriteString("\r\n")
				fc.body.done = true
				return nil
			}
			fc.body.left, fc.body.inChunk = size, true
		}
		w.Write(strconv.AppendInt(w.AvailableBuffer(), fc.body.left, 16))
		w.WriteString("\r\n")
		n, rerr, werr := copyN(w, fc.br, fc.body.left, true)
		fc.body.left -= n
		if rerr != nil {
			return &clientError{rerr}
		}
		if werr != nil {
			return werr
		}
		if err := readCRLF(fc.br); err != nil {
			return &clientError{err}
		}
		w.WriteString("\r\n")
		fc.body.inChunk = false
	}
}

// discardBody reads away an unread request body so that the connection
// can carry the next request; false when it cannot (too long, malformed,
// or never asked for with 100 Continue).
func (fc *fastConn) discardBody() bool {
	if fc.req.expect && !fc.body.sent100 {
		return false
	}
	budget := int64(maxDiscard)
	for !fc.body.done {
		if fc.body.chunked && !fc.body.inChunk {
			size, err := readChunkSize(fc.br)
			if err != nil {
				return false
			}
			if size == 0 {
				if skipTrailers(fc.br, nil) != nil {
					return false
				}
				fc.body.done = true
				return true
			}
			fc.body.left, fc.body.inChunk = size, true
		}
		if fc.body.left > budget {
			return false
		}
		n, err := fc.br.Discard(int(fc.body.left))
		budget -= int64(n)
		fc.body.left -= int64(n)
		if err != nil {
			return false
		}
		if fc.body.chunked {
			if readCRLF(fc.br) != nil {
				return false
			}
			fc.body.inChunk = false
		} else {
			fc.body.done = true
		}
	}
	return true
}

// copyN copies n bytes from src to dst through their buffers (io.Copy
// would allocate a buffer per call). With stream, dst is flushed whenever
// src has to wait, so that a stream (chunks) reaches the other side as it
// comes; a body of known length goes out as dst's buffer fills, in fewer
// writes.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64, stream bool) (copied int64, rerr, werr error) {
	for copied < n {
		if src.Buffered() == 0 {
			if stream {
				if err := dst.Flush(); err != nil {
					return copied, nil, err
				}
			}
			if _, err := src.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return copied, err, nil
			}
		}
		b, _ := src.Peek(int(min(int64(src.Buffered()), n-copied)))
		if _, err := dst.Write(b); err != nil {
			return copied, nil, err
		}
		src.Discard(len(b))
		copied += int64(len(b))
	}
	return copied, nil, nil
}

// relayChunks relays a chunked response body: re-chunked when chunked,
// decoded otherwise (to an HTTP/1.0 app); trailers pass when chunked.
func relayChunks(w *bufio.Writer, src *bufio.Reader, chunked bool, count *int64) error {
	for {
		if src.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		size, err := readChunkSize(src)
		if err != nil {
			return err
		}
		if size == 0 {
			var tw *bufio.Writer
			if chunked {
				w.WriteString("0\r\n")
				tw = w
			}
			if err := skipTrailers(src, tw); err != nil {
				return err
			}
			if chunked {
				w.WriteString("\r\n")
			}
			return w.Flush()
		}
		if chunked {
			w.Write(strconv.AppendInt(w.AvailableBuffer(), size, 16))
			w.WriteString("\r\n")
		}
		n, rerr, werr := copyN(w, src, size, true)
		*count += n
		if rerr != nil {
			return rerr
		}
		if werr != nil {
			return werr
		}
		if err := readCRLF(src); err != nil {
			return err
		}
		if chunked {
			w.WriteString("\r\n")
		}
	}
}

var errChunk = errors.New("malformed chunked encoding")

// readChunkSize reads a chunk-size line strictly: hex digits (at most 15,
// so that it cannot overflow), optional whitespace and extensions without
// controls (bounded by br's buffer), CRLF.
func readChunkSize(br *bufio.Reader) (int64, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			err = errChunk
		}
		return 0, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, errChunk
	}
	line = line[:len(line)-2]
	if i := indexByte(line, ';'); i >= 0 {
		if !validValue(line[i:]) {
			return 0, errChunk // a control (a bare CR) in an extension
		}
		line = line[:i]
	}
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1]
	}
	if len(line) == 0 || len(line) > 15 {
		return 0, errChunk
	}
	var n int64
	for _, c := range line {
		d, ok := hexDigit(c)
		if !ok {
			return 0, errChunk
		}
		n = n<<4 | int64(d)
	}
	return n, nil
}

// hexDigit is the value of a hex digit of a chunk size.
func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func readCRLF(br *bufio.Reader) error {
	b, err := br.Peek(2)
	if err != nil {
		return io.ErrUnexpectedEOF
	}
	if b[0] != '\r' || b[1] != '\n' {
		return errChunk
	}
	br.Discard(2)
	return nil
}

// skipTrailers reads the trailer section up to its blank line, checking
// each line (validTrailer) and copying the trailer lines to w when w is
// not nil.
func skipTrailers(br *bufio.Reader, w *bufio.Writer) error {
	for n := 0; ; n++ {
		line, err := br.ReadSlice('\n')
		if err != nil || len(line) < 2 || line[len(line)-2] != '\r' || n > 100 {
			return errChunk
		}
		if len(line) == 2 {
			return nil
		}
		if !validTrailer(line[:len(line)-2]) {
			return errChunk
		}
		if w != nil {
			w.Write(line)
		}
	}
}
