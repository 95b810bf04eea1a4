//go:build linux

package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/upstream"
)

// The engine serves plain HTTP/1.1 keep-alive connections on event loops
// (internal/evloop), one per GOMAXPROCS, as nginx and HAProxy do: each
// socket is read once per level-triggered readiness report, a short read
// means drained, and writes the socket cannot take wait for EPOLLOUT. It
// serves requests without a body or with a Content-Length body that fits
// its read buffer, to plain HTTP/1.1 clusters, over its own upstream
// pools, with retries, timeouts and breakers driven from the loop
// (Handler.nextTry/afterTry, the loop's tick). Anything else is handed,
// at a request boundary and with the bytes already read, to the goroutine
// fast path (fastConn), which serves it or gives it to net/http. See
// docs/http.md.

const (
	// engineTick is the granularity of the engine's timers: backoff,
	// route, per-try and connect timeouts.
	engineTick = 5 * time.Millisecond
	// sweepTicks is how often (in ticks) idle and read-header timeouts and
	// idle upstream connections are swept: about once a second, the slack
	// the goroutine path also allows its idle timeout.
	sweepTicks = 200
	// engineReadBuf is an app connection's read buffer: a request with its
	// body must fit (and its head within cliReadBuf) to be served here.
	engineReadBuf = 8 << 10
	// maxSpare bounds the read buffers a loop keeps for connections to
	// come.
	maxSpare = 64
)

// engines are a Server's parts of the process's event loops, joined with
// its first connection; connections are spread over them in turn.
type engines struct {
	s     *Server
	log   *slog.Logger
	g     *evloop.Group // the process's loops
	once  sync.Once
	mu    sync.Mutex
	loops []*engine // under mu: set once by start
	next  atomic.Uint32
	open  atomic.Int64 // connections in the loops
}

// newEngines returns the engines of s on g's loops; nil for a nil g (the
// goroutine fast path serves).
func newEngines(s *Server, g *evloop.Group, log *slog.Logger) *engines {
	if g == nil {
		return nil
	}
	return &engines{s: s, log: log, g: g}
}

func (es *engines) start() {
	es.mu.Lock()
	defer es.mu.Unlock()
	loops := es.g.Loops()
	if len(loops) == 0 {
		es.log.Debug("no HTTP engine: the goroutine fast path serves")
	}
	for _, l := range loops {
		e := &engine{es: es, s: es.s, l: l, conns: map[*econn]struct{}{},
			pools: map[*upstream.Endpoint]*epool{}, scratch: make([]byte, upReadBuf)}
		e.part = l.Join(engineTick, e.tick, nil, e.end)
		es.loops = append(es.loops, e)
	}
}

// handback is what the engine gives back of a connection: its descriptor
// (-1: closed), the bytes read from it and not served, and when the head
// pending in them began (0: none), whose read-header timeout runs on.
type handback struct {
	fd        int
	pre       []byte
	headStart int64
}

// serve moves c into an engine and returns when the engine has closed it
// (nil) or handed it back (a net.Conn of the same socket, what was read
// from it, and when the head pending in that began: zero when none).
// served is false, and c returned untouched, when c is not for the engine.
func (es *engines) serve(c net.Conn) (_ net.Conn, pre []byte, headStart time.Time, served bool) {
	es.once.Do(es.start)
	tc, ok := c.(*net.TCPConn)
	if !ok || len(es.loops) == 0 {
		return c, nil, time.Time{}, false
	}
	fd, err := evloop.DupFD(tc)
	if err != nil {
		return c, nil, time.Time{}, false
	}
	ec := &econn{fd: fd, done: make(chan handback, 1)}
	ec.remote = c.RemoteAddr().String()
	ec.ip, ec.peer, ec.key = clientKeys(ec.remote)
	c.Close()
	e := es.loops[es.next.Add(1)%uint32(len(es.loops))]
	ec.e = e
	es.open.Add(1)
	defer es.open.Add(-1)
	if !e.part.Do(func() { e.add(ec) }) {
		unix.Close(fd)
		return nil, nil, time.Time{}, true
	}
	hb := <-ec.done
	if hb.fd < 0 {
		return nil, nil, time.Time{}, true
	}
	nc, err := evloop.NetConn(hb.fd)
	if err != nil {
		return nil, nil, time.Time{}, true
	}
	if hb.headStart > 0 {
		headStart = time.Unix(0, hb.headStart)
	}
	return nc, hb.pre, headStart, true
}

// closeIdle closes, on each loop, the connections between requests that a
// drain closes (those that were served, and with closing all of them);
// it returns the connections still in the loops.
func (es *engines) closeIdle(closing bool) int {
	for _, e := range es.started() {
		e.part.Do(func() { e.closeIdle(closing) })
	}
	return int(es.open.Load())
}

// stop ends the loops, closing what is left.
func (es *engines) stop() {
	es.once.Do(func() {}) // none to start any more
	for _, e := range es.started() {
		e.part.Leave()
		<-e.part.Done()
	}
}

// started returns the loops, none before the first connection.
func (es *engines) started() []*engine {
	es.mu.Lock()
	defer es.mu.Unlock()
	return es.loops
}

// engine is one loop's state; all of it belongs to the loop goroutine.
type engine struct {
	es      *engines
	s       *Server
	l       *evloop.Loop
	part    *evloop.Part // the engine's share of l
	conns   map[*econn]struct{}
	timed   evloop.Set[*econn] // with a request in flight
	pools   map[*upstream.Endpoint]*epool
	ticks   int
	spare   [][]byte
	scratch []byte // the upstream reads' shared buffer
}

// econn is one app connection in an engine.
type econn struct {
	evloop.Member // of e.timed
	e             *engine
	fd            int
	src           *evloop.Conn // its Out: the response bytes the socket has not taken
	remote        string
	ip            string
	peer          netip.Addr
	key           uint64
	done          chan handback

	rbuf      []byte // read and not yet consumed
	served    bool   // a request was served: a drain closes it when idle
	closing   bool   // close once out is written
	eof       bool   // the app has closed its side
	lastRead  int64
	headStart int64 // when the pending head began (the accept, for the first); 0: none

	lastHost     string
	lastLoopback bool

	// The request in progress.
	active       bool
	h            *Handler
	req          reqHead
	headLen      int // of the request head with its blank line
	reqLen       int // of the request with its body
	x            exchange
	ts           tryState
	ids          reqIDs
	start        int64
	deadline     int64 // route timeout; 0: none
	tryDeadline  int64 // per-try timeout; 0: none
	maxTries     int
	idem         bool
	admitted     bool  // counted in the cluster's inflight
	slot         bool  // holds a connection slot of the cluster
	queued       bool  // waiting for a connection slot (in the cluster's slots.waiting)
	backoffUntil int64 // waiting to retry
	closeAfter   bool
	bytesOut     int64
	status       int

	// The try in progress and its response.
	up          *eup
	ep          *upstream.Endpoint
	resp        respHead
	respStarted bool // the response head went to the app
	respClose   bool
	framing     respFraming
	left        int64
	cs          chunkScan
}

// eup is one upstream connection of an engine: idle in its pool (c nil)
// or serving c's try.
type eup struct {
	e            *engine
	src          *evloop.Conn // nil while a dial goroutine connects
	ep           *upstream.Endpoint
	c            *econn
	rbuf         []byte // len: bytes held, from roff (own, or the loop's scratch during a read)
	own          []byte // allocated when something must be held between reads
	roff         int
	wbuf         []byte // the request, written up to woff
	woff         int
	connecting   bool
	connDeadline int64
	dead         bool // closed (a dial still running closes what it gets)
	reused       bool // from the pool, for this try
	got          bool // a response byte came on this try
	broken       bool // the request was not sent whole
	idleFrom     int64
	idleFor      int64
}

// epool is an engine's idle connections to one endpoint, newest last.
// Each holds a place of the endpoint's idleBudget, shared with the other
// loops, Servers and paths.
type epool struct {
	idle    []*eup
	cluster *Cluster    // whose budget is held
	budget  *idleBudget // of cluster's endpoint
	addr    netip.AddrPort
	literal bool // addr holds the endpoint's address: connect in the loop
}

func (e *engine) add(c *econn) {
	c.src = &evloop.Conn{}
	e.l.AddConn(c.src, c.fd, c)
	e.conns[c] = struct{}{}
	c.lastRead = e.l.Now()
	c.headStart = c.lastRead // the first head is due from the accept, not after idle_timeout
	if n := len(e.spare); n > 0 {
		c.rbuf, e.spare = e.spare[n-1][:0], e.spare[:n-1]
	} else {
		c.rbuf = make([]byte, 0, engineReadBuf)
	}
	if e.s.closing.Load() {
		c.close()
		return
	}
	c.update()
}

// Event serves the app socket's readiness.
func (c *econn) Event(ev uint32) {
	if ev&evloop.Out != 0 {
		if err := c.src.Flush(); err != nil {
			c.abort()
			return
		}
	}
	if ev&(evloop.Hup|evloop.Err) != 0 && c.active {
		c.abort() // the app has gone: nothing will read the response
		return
	}
	// Drained (see evloop.Loop.Drained): no hang-up, and nothing to read
	// or one short read.
	empty := ev&(evloop.In|evloop.RdHup|evloop.Hup|evloop.Err) == 0
	if !empty && c.wantsIn() {
		empty = c.read()
		if c.src.FD < 0 {
			return
		}
	}
	c.drained()
	if empty && ev&(evloop.Hup|evloop.Err|evloop.RdHup) == 0 {
		c.e.l.Drained()
	}
}

func (c *econn) pending() bool { return c.src.Pending() }

// drained moves on once nothing is left to write: the response resumes,
// the next request starts, or the connection closes.
func (c *econn) drained() {
	if c.src.FD < 0 {
		return
	}
	if !c.pending() {
		if c.active {
			if u := c.up; u != nil && c.respStarted {
				u.update()
			}
		} else {
			if !c.closing {
				c.process()
				if c.src.FD < 0 {
					return
				}
			}
			if c.closing && !c.active && !c.pending() {
				c.close()
				return
			}
		}
	}
	c.update()
}

// update sets the app socket's interest from its state.
func (c *econn) update() {
	if c.src == nil || c.src.FD < 0 {
		return
	}
	if c.src.Settle(c.wantsIn()) != nil {
		c.close()
	}
}

// wantsIn reports whether the app socket is read: always while there is
// room, even during a request (what comes is the next request), so that
// the interest, and epoll_ctl, need not change per request.
func (c *econn) wantsIn() bool { return !c.closing && !c.eof && len(c.rbuf) < cap(c.rbuf) }

// read reads the app socket once; true when that left it empty.
func (c *econn) read() (empty bool) {
	room := c.rbuf[len(c.rbuf):cap(c.rbuf)]
	n, err := c.src.Fill(room)
	switch {
	case n > 0:
		c.rbuf = c.rbuf[:len(c.rbuf)+n]
		c.lastRead = c.e.l.Now()
		return n < len(room)
	case err == syscall.EAGAIN:
		return true
	case err == io.EOF && (c.active || c.pending()):
		c.eof = true // the app has sent all: its answer still goes
	case c.active:
		c.abort()
	default: // end of stream or error, between requests
		c.close()
	}
	return false
}

// process starts the request at the head of rbuf, if it is whole: served
// here, answered (400, 404) or handed to the goroutine path.
func (c *econn) process() {
	s := c.e.s
	for !c.active && !c.pending() && !c.closing && c.src.FD >= 0 {
		if len(c.rbuf) == 0 {
			if c.served {
				c.headStart = 0 // between requests: idle
			}
			if s.draining.Load() && c.served || c.eof {
				c.close()
			}
			return
		}
		n, bare := headEnd(c.rbuf)
		if n < 0 {
			if len(c.rbuf) >= cliReadBuf {
				c.handOff()
				return
			}
			if c.eof {
				c.close() // a head cut by the end of the stream
				return
			}
			if c.headStart == 0 {
				c.headStart = c.e.l.Now()
			}
			return
		}
		// The head is parsed in place, its strings over rbuf: the bytes of
		// a request stay where they are until it ends (reads append after
		// them; finish moves the next request down only after the access
		// log), and nothing keeps a string of it past that (lastHost is a
		// copy). No allocation per request, so no GC under load. Every
		// head is checked before it is handed on, whatever takes it.
		var v verdict
		var why string
		if bare {
			v, why = c.req.parseBare(c.rbuf[:n])
		} else {
			v, why = c.req.parse(unsafe.String(&c.rbuf[0], n))
		}
		if v != reject && (bare || n > cliReadBuf) {
			c.handOff()
			return
		}
		if v == reject && notHTTP(c.rbuf[:n]) {
			c.close() // not HTTP at all: no answer (see notHTTP)
			return
		}
		if v == reject {
			c.src.Out = appendBadRequest(c.src.Out, why)
			c.closing = true
			if h := s.handler.Load(); h != nil {
				h.log.Debug("malformed request", "listener", h.listener, "client", c.remote, "reason", why)
			}
			if c.src.Write(nil) != nil {
				c.close()
			}
			return
		}
		h := s.handler.Load()
		r := &c.req
		if h == nil || v == handOff || r.http10 || r.chunked || r.expect {
			c.handOff()
			return
		}
		route := h.table.matchFields(r.method, r.path, r.host, r)
		if route != nil && !route.fast {
			c.handOff()
			return
		}
		total := n + 2 + int(max(r.length, 0))
		if r.length > engineReadBuf || total > cap(c.rbuf) {
			c.handOff()
			return
		}
		c.headStart = 0
		if len(c.rbuf) < total {
			if c.eof {
				c.close()
			}
			return // the body is on its way (the idle timeout applies)
		}
		c.headLen, c.reqLen = n+2, total
		c.begin(h, route)
	}
}

// handOff gives the connection, with what was read, to the goroutine path.
func (c *econn) handOff() {
	pre := append([]byte(nil), c.rbuf...)
	fd := c.src.FD
	c.src.Release()
	c.src.FD = -1
	c.forget()
	c.done <- handback{fd: fd, pre: pre, headStart: c.headStart}
}

// close closes the connection between requests (or after abort).
func (c *econn) close() {
	if c.src == nil || c.src.FD < 0 {
		return
	}
	c.src.Close(false)
	c.forget()
	c.done <- handback{fd: -1}
}

func (c *econn) forget() {
	e := c.e
	delete(e.conns, c)
	e.disarm(c)
	if cap(c.rbuf) == engineReadBuf && len(e.spare) < maxSpare {
		e.spare = append(e.spare, c.rbuf[:0])
	}
	c.rbuf = nil
}

// begin serves a request whose head and body are in rbuf.
func (c *econn) begin(h *Handler, route *compiledRoute) {
	e, r, x := c.e, &c.req, &c.x
	c.active, c.served = true, true
	c.h, c.start, c.bytesOut, c.status, c.ids.gen = h, e.l.Now(), 0, 0, false
	x.route, x.cluster, x.attempts, x.endpoint, x.err, x.reason, x.stop = route, nil, 0, "", nil, "", nil
	x.timedOut.Store(false)
	c.ts = tryState{}
	c.closeAfter = r.close || e.s.draining.Load()
	c.up, c.ep, c.respStarted, c.backoffUntil, c.deadline, c.tryDeadline = nil, nil, false, 0, 0, 0
	if route == nil {
		x.reason = "no route"
		c.answer(http.StatusNotFound, "no route matched", false, -1, noRouteMessage(r))
		return
	}
	x.cluster = route.pickFor(r, c.peer)
	x.key = c.key
	if r.host != c.lastHost || c.lastHost == "" {
		c.lastHost, c.lastLoopback = strings.Clone(r.host), isLoopbackHost(r.host)
	}
	x.hostFrom = (route.rewrite == nil || route.rewrite.Host == "") && c.lastLoopback
	if route.limit != nil && c.rateLimited(route) {
		return
	}
	if route.timeout > 0 {
		c.deadline = c.start + int64(route.timeout)
	}
	c.admitted = true
	wait, err := h.admit(x.cluster)
	if err != nil {
		c.fail(err)
		return
	}
	policy := route.retry
	c.maxTries = policy.maxTries(r.length <= 0 || policy.buffers(r.length))
	c.idem = idempotent(r.method, r)
	e.arm(c)
	if wait {
		c.queued = true // the tick polls for a slot
		return
	}
	c.slot = true
	c.nextTry()
}

// pendingSlot takes a connection slot for a queued request when one is
// free and starts its first try.
func (c *econn) pendingSlot() {
	s := &c.x.cluster.slots
	if !s.tryAcquire() {
		return
	}
	s.waiting.Add(-1)
	c.queued, c.slot = false, true
	c.nextTry()
}

// leave gives back what the request holds of its cluster: its count in
// flight, its connection slot or its place among the pending.
func (c *econn) leave() {
	cl := c.x.cluster
	if c.admitted {
		cl.inflight.Add(-1)
		c.admitted = false
	}
	if c.slot {
		cl.slots.release()
		c.slot = false
	}
	if c.queued {
		cl.slots.waiting.Add(-1)
		c.queued = false
	}
}

// nextTry starts the next try, or answers when there is none.
func (c *econn) nextTry() {
	ep, err := c.h.nextTry(&c.x, &c.ts)
	if err != nil {
		c.fail(err)
		return
	}
	c.ep = ep
	ep.AddActive(1)
	c.tryDeadline = 0
	if p := c.x.route.retry; p != nil && p.perTry > 0 {
		c.tryDeadline = c.e.l.Now() + int64(p.perTry)
	}
	c.connect()
}

// connect sends the try over a pooled connection to c.ep, or a new one.
func (c *econn) connect() {
	e := c.e
	u, reused := e.get(c.ep), true
	for u != nil && !c.idem && u.peerClosed() {
		// A request that must not run twice takes no connection the
		// upstream has closed already (its close not yet reported).
		u.kill()
		u = e.get(c.ep)
	}
	if u == nil {
		reused = false
		var err error
		if u, err = e.dial(c); err != nil {
			c.tryFailed(err, false)
			return
		}
	}
	u.c, c.up = c, u
	u.reused, u.got, u.broken = reused, false, false
	u.rbuf, u.roff = u.rbuf[:0], 0
	framing := c.req.length
	if framing <= 0 {
		framing = framingNone
	}
	u.wbuf = appendRequestHead(u.wbuf[:0], &c.req, &c.x, c.ep.Addr, c.ip, "http", &c.ids, framing)
	u.wbuf = append(u.wbuf, c.rbuf[c.headLen:c.reqLen]...)
	u.woff = 0
	if !u.connecting {
		u.flush()
	}
	u.update()
}

// tryFailed ends a try that got no response head.
func (c *econn) tryFailed(err error, perTry bool) {
	if u := c.up; u != nil {
		u.kill()
		c.up = nil
	}
	c.ep.AddActive(-1)
	retry, backoff, err := c.h.afterTry(&c.x, &c.ts, c.ep, 0, err, perTry, c.maxTries, c.idem, c.expired())
	switch {
	case !retry:
		c.fail(err)
	case c.ts.redispatch:
		c.nextTry() // nothing was sent: at once, not a retry
	default:
		c.wait(backoff)
	}
}

// expired reports (and records in x) that the route timeout has passed.
func (c *econn) expired() bool {
	if c.deadline > 0 && c.e.l.Now() >= c.deadline {
		c.x.timedOut.Store(true)
		return true
	}
	return false
}

// wait starts the backoff before the next try, cut short by the route
// timeout.
func (c *econn) wait(d time.Duration) {
	c.x.cluster.retrying.Add(1)
	c.backoffUntil = c.e.l.Now() + int64(d)
	if c.deadline > 0 && c.backoffUntil > c.deadline {
		c.backoffUntil = c.deadline
	}
}

// backedOff ends the backoff.
func (c *econn) backedOff() {
	c.backoffUntil = 0
	c.x.cluster.retrying.Add(-1)
	if c.expired() {
		c.fail(c.ts.lastErr)
		return
	}
	c.nextTry()
}

// fail answers a request attache could not forward.
func (c *econn) fail(err error) {
	x := &c.x
	status, reason, over := classify(x, err, false)
	x.reason = reason
	c.h.log.Debug("request failed", "listener", c.h.listener, "route", x.route.Name, "cluster", x.cluster.Name(), "error", err, "status", status)
	c.answer(status, reason, over, x.attempts, failMessage(reason, x))
}

// answer sends attache's own response and ends the request.
func (c *econn) answer(status int, reason string, over bool, attempts int, msg string) {
	head := c.req.method == http.MethodHead
	c.src.Out = appendError(c.src.Out, status, reason, over, attempts, c.closeAfter, false, head, msg)
	if !head {
		c.bytesOut += int64(len(msg))
	}
	c.status = status
	if c.src.Write(nil) != nil {
		c.abort()
		return
	}
	c.finish(time.Now().UnixNano())
}

// finish ends the request at now (read by the caller: the loop's clock is
// of the batch's start): metrics and access log, the request consumed
// from rbuf, and the next one, or the close.
func (c *econn) finish(now int64) {
	e := c.e
	c.leave()
	e.disarm(c)
	c.active = false
	c.h.record(&c.x, c.status, time.Duration(now-c.start), c.bytesOut, c.accessFields)
	n := copy(c.rbuf, c.rbuf[c.reqLen:])
	c.rbuf = c.rbuf[:n]
	c.lastRead = now
	if c.closeAfter || e.s.draining.Load() {
		c.closing = true
	}
	c.drained()
}

func (c *econn) accessFields() accessFields {
	return accessFields{c.req.method, c.req.path, c.remote, c.ids.requestID(&c.req)}
}

// abort cuts the exchange in progress (the app went away, or the
// upstream failed mid-response) and closes the connection: an app sees a
// cut response, never a wrong one.
func (c *econn) abort() {
	if c.active {
		if u := c.up; u != nil {
			u.kill()
			c.up = nil
			c.ep.AddActive(-1)
		}
		if c.backoffUntil > 0 {
			c.backoffUntil = 0
			c.x.cluster.retrying.Add(-1)
		}
		c.leave()
		c.active = false
		if c.status == 0 {
			c.status = 499
			c.x.reason = "client closed request"
		}
		c.h.record(&c.x, c.status, time.Duration(time.Now().UnixNano()-c.start), c.bytesOut, c.accessFields)
	}
	c.close()
}

// Event serves an upstream socket's readiness.
func (u *eup) Event(ev uint32) {
	c := u.c
	if c == nil { // idle: the server closed it, or sent what nobody asked
		u.e.dropIdle(u)
		return
	}
	if u.connecting {
		if ev&(evloop.Out|evloop.Err|evloop.Hup) == 0 {
			return
		}
		err := u.src.ConnectResult()
		u.e.up(c).RecordConnect(u.ep, err)
		if err != nil {
			c.tryFailed(&connectError{fmt.Errorf("dial tcp %s: %w", u.ep.Addr, err)}, false)
			return
		}
		u.connecting = false
		u.flush()
		u.update()
		return
	}
	if ev&evloop.Out != 0 {
		u.flush()
	}
	empty := ev&(evloop.In|evloop.RdHup|evloop.Hup|evloop.Err) == 0
	if !empty {
		empty = u.read()
	}
	if u.c == c {
		u.update()
	}
	if empty && ev&(evloop.Hup|evloop.Err|evloop.RdHup) == 0 {
		u.e.l.Drained() // see econn.Event
	}
}

// flush writes what is left of the request. A failed write leaves the
// response to tell (the upstream may have answered early).
func (u *eup) flush() {
	if u.woff == len(u.wbuf) {
		return
	}
	n, err := u.src.Send(u.wbuf[u.woff:])
	u.woff += n
	if err != nil {
		u.broken = true
		u.woff = len(u.wbuf)
	}
}

// update sets the upstream socket's interest from its state: a body
// waiting to reach the app stops the reading (backpressure).
func (u *eup) update() {
	if u.src == nil || u.src.FD < 0 {
		return
	}
	var m uint32
	switch c := u.c; {
	case c == nil:
		m = evloop.In | evloop.RdHup
	case u.connecting:
		m = evloop.Out
	default:
		if u.woff < len(u.wbuf) {
			m |= evloop.Out
		}
		if !(c.respStarted && c.pending()) {
			m |= evloop.In | evloop.RdHup
		}
	}
	if err := u.src.Want(m); err != nil && u.c != nil {
		u.c.tryFailedOrAbort(err)
	}
}

func (c *econn) tryFailedOrAbort(err error) {
	if c.respStarted {
		c.abort()
	} else {
		c.tryFailed(err, false)
	}
}

// read reads what the upstream sent. With nothing held from before, it
// reads into the loop's shared buffer, which stays in the cache (64
// connections' own 32 KiB buffers would not): what is left after the
// response took its part (a partial head, more than the response) moves
// to the connection's own buffer.
func (u *eup) read() (empty bool) {
	c := u.c
	defer u.keep()
	if len(u.rbuf) == u.roff {
		u.rbuf, u.roff = u.e.scratch[:0], 0
	} else if u.roff > 0 && len(u.rbuf) == cap(u.rbuf) {
		n := copy(u.rbuf, u.rbuf[u.roff:])
		u.rbuf, u.roff = u.rbuf[:n], 0
	}
	if len(u.rbuf) == cap(u.rbuf) {
		c.tryFailed(errors.New("upstream response head too large"), false)
		return false
	}
	room := len(u.rbuf[len(u.rbuf):cap(u.rbuf)])
	n, err := u.src.Fill(u.rbuf[len(u.rbuf):cap(u.rbuf)])
	switch {
	case n > 0:
		u.rbuf = u.rbuf[:len(u.rbuf)+n]
		u.got = true
		c.response()
		return n < room
	case err == syscall.EAGAIN:
		return true
	}
	eof := err == io.EOF
	if eof {
		err = io.ErrUnexpectedEOF
	}
	if !c.respStarted {
		if u.reused && !u.got && c.idem {
			// A pooled connection the upstream had closed: the request
			// goes again on a fresh one, not as another attempt.
			u.kill()
			c.up = nil
			c.connect()
			return false
		}
		c.tryFailed(err, false)
		return false
	}
	if eof && c.framing == bodyUntilClose {
		c.src.Out = append(c.src.Out, "0\r\n\r\n"...)
		c.respClose = true
		c.respDone()
		return false
	}
	c.abort()
	return false
}

// keep moves what u holds in the loop's shared buffer to its own.
func (u *eup) keep() {
	if cap(u.rbuf) == 0 || unsafe.SliceData(u.rbuf) != unsafe.SliceData(u.e.scratch) {
		return
	}
	rest := u.rbuf[u.roff:]
	if len(rest) > 0 && u.own == nil {
		u.own = make([]byte, 0, upReadBuf)
	}
	u.rbuf, u.roff = append(u.own[:0], rest...), 0
}

// response takes what came from the upstream: the head (and the try's
// outcome), then the body.
func (c *econn) response() {
	u := c.up
	if !c.respStarted {
		var n int
		for {
			var bare bool
			n, bare = headEnd(u.rbuf[u.roff:])
			if n < 0 {
				return
			}
			if bare || !c.resp.parse(u.rbuf[u.roff:u.roff+n]) {
				c.tryFailed(errors.New("malformed upstream response head"), false)
				return
			}
			if c.resp.status >= 200 {
				break
			}
			if c.resp.status == http.StatusSwitchingProtocols {
				c.tryFailed(errors.New("upstream switched protocols unasked"), false)
				return
			}
			u.roff += n + 2
		}
		retry, backoff, _ := c.h.afterTry(&c.x, &c.ts, c.ep, c.resp.status, nil, false, c.maxTries, c.idem, c.expired())
		if retry {
			u.kill() // the retried response is dropped with its connection
			c.up = nil
			c.ep.AddActive(-1)
			c.wait(backoff)
			return
		}
		c.respStarted, c.status, c.respClose, c.tryDeadline = true, c.resp.status, c.resp.close, 0
		c.framing = framingOf(&c.resp, c.req.method)
		chunkOut := c.framing == bodyChunked || c.framing == bodyUntilClose
		c.src.Out = appendResponseHead(c.src.Out, &c.resp, chunkOut, c.x.attempts, c.closeAfter, false)
		u.roff += n + 2
		c.left, c.cs = c.resp.length, chunkScan{}
	}
	c.relay()
}

// relay passes the body bytes the upstream buffer holds to the app.
func (c *econn) relay() {
	u := c.up
	data := u.rbuf[u.roff:]
	var take int
	done := false
	switch c.framing {
	case bodyNone:
		done = true
	case bodyLength:
		take = int(min(int64(len(data)), c.left))
		c.left -= int64(take)
		done = c.left == 0
	case bodyChunked:
		var err error
		if take, done, err = c.cs.scan(data); err != nil {
			c.abort()
			return
		}
	case bodyUntilClose:
		take = len(data)
		if take > 0 {
			c.src.Out = fmt.Appendf(c.src.Out, "%x\r\n", take)
			c.src.Out = append(c.src.Out, data...)
			c.src.Out = append(c.src.Out, "\r\n"...)
			c.bytesOut += int64(take)
			u.roff += take
			data, take = nil, 0
		}
	}
	if err := c.src.Write(data[:take]); err != nil {
		c.abort()
		return
	}
	c.bytesOut += int64(take)
	u.roff += take
	if u.roff == len(u.rbuf) {
		u.rbuf, u.roff = u.rbuf[:0], 0
	}
	if done {
		c.respDone()
		return
	}
	u.update()
	c.update()
}

// respDone ends a relayed response: the upstream connection goes back to
// its pool when the exchange ended cleanly.
func (c *econn) respDone() {
	u := c.up
	c.up = nil
	u.c = nil
	c.ep.AddActive(-1)
	now := c.e.l.Now() // the batch clock: the idle start and the latency
	if !c.respClose && !u.broken && u.woff == len(u.wbuf) && u.roff == len(u.rbuf) && c.framing != bodyUntilClose {
		c.e.put(u, c.x.cluster, now)
	} else {
		u.kill()
	}
	c.finish(now)
}

// up is the upstream cluster of c's request.
func (e *engine) up(c *econn) *upstream.Cluster { return c.x.cluster.opts.Upstream }

// pool returns the engine's pool of ep.
func (e *engine) pool(ep *upstream.Endpoint) *epool {
	p := e.pools[ep]
	if p == nil {
		p = &epool{}
		if ap, err := netip.ParseAddrPort(ep.Addr); err == nil {
			p.addr, p.literal = ap, true
		}
		e.pools[ep] = p
	}
	return p
}

// take reserves a place of c's budget for ep (see idleBudget) for an idle
// connection of p.
func (p *epool) take(c *Cluster, ep *upstream.Endpoint) bool {
	if p.cluster != c {
		if len(p.idle) > 0 {
			return false // those hold the budget of a cluster a reload replaced
		}
		p.cluster, p.budget = c, c.budget(ep)
	}
	return p.budget.take()
}

// get returns the newest idle connection to ep that is not past its idle
// timeout, or nil.
func (e *engine) get(ep *upstream.Endpoint) *eup {
	p := e.pools[ep]
	if p == nil {
		return nil
	}
	now := e.l.Now()
	for len(p.idle) > 0 {
		u := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		p.budget.give()
		if u.idleFor > 0 && now-u.idleFrom > u.idleFor {
			u.kill() // and the older ones below it at the next sweep
			continue
		}
		return u
	}
	return nil
}

// put keeps an idle connection, idle from now, within the cluster's
// max_idle_per_endpoint, shared with every loop and path (idleBudget).
func (e *engine) put(u *eup, c *Cluster, now int64) {
	p := e.pool(u.ep)
	if !p.take(c, u.ep) {
		u.kill()
		return
	}
	u.idleFrom, u.idleFor = now, int64(c.opts.IdleTimeout)
	u.rbuf, u.roff = u.rbuf[:0], 0
	p.idle = append(p.idle, u)
	u.update()
}

// dropIdle closes an idle connection and takes it out of its pool.
func (e *engine) dropIdle(u *eup) {
	if p := e.pools[u.ep]; p != nil {
		for i, v := range p.idle {
			if v == u {
				p.idle = append(p.idle[:i], p.idle[i+1:]...)
				p.budget.give()
				break
			}
		}
	}
	u.kill()
}

// peerClosed reports whether the upstream closed an idle connection, or
// sent on it what nobody asked: a non-blocking peek finds anything but
// nothing.
func (u *eup) peerClosed() bool {
	var b [1]byte
	_, _, err := unix.Recvfrom(u.src.FD, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err != unix.EAGAIN
}

func (u *eup) kill() {
	u.dead = true
	u.c = nil
	if u.src != nil {
		u.src.Close(false)
	}
}

// dial starts a connection for c's try: a non-blocking connect in the
// loop to an address, or a dial goroutine for a name to resolve.
func (e *engine) dial(c *econn) (*eup, error) {
	ep, cl := c.ep, c.x.cluster
	u := &eup{e: e, ep: ep, connecting: true}
	now := e.l.Now()
	if t := cl.opts.ConnectTimeout; t > 0 {
		u.connDeadline = now + int64(t)
	}
	p := e.pool(ep)
	if !p.literal {
		d := net.Dialer{Timeout: cl.opts.ConnectTimeout, KeepAlive: 30 * time.Second}
		e.part.Dial(func() (net.Conn, error) { return d.DialContext(context.Background(), "tcp", ep.Addr) },
			func(fd int, err error) { u.dialed(fd, err) })
		return u, nil
	}
	u.src = &evloop.Conn{}
	connected, err := u.src.Connect(e.l, p.addr, u)
	if err != nil {
		err = fmt.Errorf("dial tcp %s: %w", ep.Addr, err)
		cl.opts.Upstream.RecordConnect(ep, err)
		return nil, &connectError{err}
	}
	if connected {
		u.connecting = false
		cl.opts.Upstream.RecordConnect(ep, nil)
	}
	return u, nil
}

// dialed takes the outcome of a dial goroutine.
func (u *eup) dialed(fd int, err error) {
	if u.dead {
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	c := u.c
	u.e.up(c).RecordConnect(u.ep, err)
	if err != nil {
		c.tryFailed(&connectError{err}, false)
		return
	}
	u.src = &evloop.Conn{}
	u.e.l.AddConn(u.src, fd, u)
	u.connecting = false
	u.flush()
	u.update()
}

// arm and disarm keep the connections with a request in flight, for the
// tick's timeouts.
func (e *engine) arm(c *econn)    { e.timed.Add(c) }
func (e *engine) disarm(c *econn) { e.timed.Remove(c) }

// tick runs the timers of requests in flight and, about once a second,
// the sweep of idle connections.
func (e *engine) tick() {
	now := e.l.Now()
	// What a timeout does may take connections out of timed (or put them
	// back) while this goes on.
	for c := range e.timed.All() {
		switch {
		case !c.active || c.respStarted:
		case c.backoffUntil > 0:
			if now >= c.backoffUntil {
				c.backedOff()
			}
		case c.queued && c.deadline > 0 && now >= c.deadline:
			c.x.timedOut.Store(true)
			c.fail(fmt.Errorf("waiting for a connection: %w", context.DeadlineExceeded))
		case c.queued:
			c.pendingSlot()
		case c.deadline > 0 && now >= c.deadline:
			c.x.timedOut.Store(true)
			c.tryFailed(fmt.Errorf("route timeout: %w", context.DeadlineExceeded), false)
		case c.tryDeadline > 0 && now >= c.tryDeadline:
			c.tryFailed(fmt.Errorf("per-try timeout after %v: %w", c.x.route.retry.perTry, context.DeadlineExceeded), true)
		case c.up != nil && c.up.connecting && c.up.connDeadline > 0 && now >= c.up.connDeadline:
			err := fmt.Errorf("dial tcp %s: i/o timeout: %w", c.ep.Addr, os.ErrDeadlineExceeded)
			e.up(c).RecordConnect(c.ep, err)
			c.tryFailed(&connectError{err}, false)
		}
	}
	if e.ticks++; e.ticks%sweepTicks != 0 {
		return
	}
	idle := int64(e.s.idle)
	for c := range e.conns {
		if c.active || c.pending() {
			continue
		}
		if c.headStart > 0 && now-c.headStart > int64(e.s.headerTimeout) || c.headStart == 0 && idle > 0 && now-c.lastRead > idle {
			c.close()
		}
	}
	for ep, p := range e.pools {
		kept := p.idle[:0]
		for _, u := range p.idle {
			if u.idleFor > 0 && now-u.idleFrom > u.idleFor {
				u.kill()
				p.budget.give()
			} else {
				kept = append(kept, u)
			}
		}
		clear(p.idle[len(kept):])
		p.idle = kept
		if len(p.idle) == 0 {
			delete(e.pools, ep)
		}
	}
}

// closeIdle closes the connections a drain closes.
func (e *engine) closeIdle(closing bool) {
	for c := range e.conns {
		if !c.active && !c.pending() && (c.served || closing) {
			c.close()
		}
	}
}

// end closes everything, when the loop stops.
func (e *engine) end() {
	for c := range e.conns {
		c.abort()
	}
	for _, p := range e.pools {
		for _, u := range p.idle {
			u.kill()
			p.budget.give()
		}
	}
	clear(e.pools)
}
