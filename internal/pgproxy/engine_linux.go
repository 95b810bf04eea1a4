package pgproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/pgsql"
	"github.com/attache-proxy/attache/internal/rawsys"
	"github.com/attache-proxy/attache/internal/upstream"
)

// engine serves logged-in plain-TCP transaction-mode clients, and the
// server connections they hold, on one goroutine over a level-triggered
// epoll set (internal/evloop), as pgbouncer does: a socket is read once
// per readiness report (a short read means drained), and nobody parks or
// wakes per message. The per-message logic is the goroutine path's
// (consume for client messages, handle for server messages); the engine
// only frames messages, reads and writes.
//
// A client is handed back to the goroutine path (handBack), at a message
// boundary with nothing owed, when it does something rare: a statement
// that pins it, or a Flush. Server connections are opened (connect,
// login, parameters that differ) on goroutines; an idle one is taken
// from the pool at once, and a client that has to wait is a waiter whose
// grant comes back through the loop's Do.
//
// Everything but serve and stop belongs to the loop goroutine.
type engine struct {
	p       *Proxy
	l       *evloop.Loop
	part    *evloop.Part // the engine's share of l
	scratch []byte
	clients map[*eclient]struct{}
	waiting evloop.Set[*eclient]    // queued as waiters, for the tick
	effects map[string]pgsql.Effect // of unnamed Parse texts seen (effectOf)
	grants  []grant                 // handed by this loop's own releases, for after

	// Messages decoded in place (only the fields the logic reads), and
	// placeholders of the right type for the rest (see handle).
	query       pgproto3.Query
	parse       pgproto3.Parse
	bind        pgproto3.Bind
	describe    pgproto3.Describe
	close       pgproto3.Close
	execute     pgproto3.Execute
	sync        pgproto3.Sync
	flush       pgproto3.Flush
	funcCall    pgproto3.FunctionCall
	copyData    pgproto3.CopyData
	copyDone    pgproto3.CopyDone
	copyFail    pgproto3.CopyFail
	errResp     pgproto3.ErrorResponse
	paramStatus pgproto3.ParameterStatus
	ready       pgproto3.ReadyForQuery
	parseDone   pgproto3.ParseComplete
	bindDone    pgproto3.BindComplete
	closeDone   pgproto3.CloseComplete
	rowDesc     pgproto3.RowDescription
	noData      pgproto3.NoData
	cmdDone     pgproto3.CommandComplete
	emptyQuery  pgproto3.EmptyQueryResponse
	suspended   pgproto3.PortalSuspended
	copyIn      pgproto3.CopyInResponse
	copyBoth    pgproto3.CopyBothResponse
	other       pgproto3.DataRow // any other message, passed on raw
}

// tickEvery is how often waiting clients are checked for
// query_wait_timeout, reserve_pool_timeout and their route, unless one of
// those timeouts is short enough to need a finer tick (tickFor).
const tickEvery = 50 * time.Millisecond

// tickFor is the engines' tick for cfg: tickEvery, or half the shortest
// wait timeout when that is less (1 ms at the finest), so that a timeout
// fires within half its length of when it is due, as the goroutine
// path's timers do at once.
func tickFor(cfg *Config) time.Duration {
	d := tickEvery
	limits := []time.Duration{cfg.QueryWaitTimeout}
	if cfg.ReservePoolSize > 0 {
		limits = append(limits, cfg.ReservePoolTimeout)
	}
	for _, t := range limits {
		if t > 0 && t/2 < d {
			d = max(t/2, time.Millisecond)
		}
	}
	return d
}

// maxBuffered bounds what an engine queues for one socket before it stops
// reading the other side.
const maxBuffered = 256 << 10

// newEngines makes an engine on each of loops.
func newEngines(p *Proxy, loops []*evloop.Loop) []*engine {
	var es []*engine
	for _, l := range loops {
		e := &engine{p: p, l: l, scratch: make([]byte, 64<<10), clients: map[*eclient]struct{}{}, effects: map[string]pgsql.Effect{}}
		e.part = l.Join(tickFor(&p.cfg), e.tick, e.after, e.end)
		es = append(es, e)
	}
	return es
}

// stop takes the engine off its loop, closing the clients left.
func (e *engine) stop() { e.part.Leave() }

// grant is a server connection (or a slot, nil) handed to a waiting
// client by a release on the loop itself.
type grant struct {
	ec *eclient
	s  *server
}

// after serves, once a batch of events is done, the grants its releases
// made: no Do (a lock, an eventfd write and read) per transaction.
func (e *engine) after() {
	for i := 0; i < len(e.grants); i++ { // granted may add more
		g := e.grants[i]
		e.grants[i] = grant{}
		g.ec.granted(g.s)
	}
	e.grants = e.grants[:0]
}

func (ec *eclient) engine() *engine {
	if ec == nil {
		return nil
	}
	return ec.e
}

// now is the time the loop read its current batch of events: one clock
// read per batch, where a statement's bookkeeping (its start, its end, a
// wait, a release) would read it several times.
func (e *engine) now() time.Time { return time.Unix(0, e.l.Now()) }

// eclient is the engine's side of one client.
type eclient struct {
	evloop.Member // of e.waiting
	e             *engine
	c             *client
	src           evloop.Conn  // the client socket (a duplicate, the engine's own)
	ssrc          *evloop.Conn // srv's socket (srv.fd)
	srv           *server      // the server connection read and written here
	in            []byte       // client bytes not consumed yet
	sin           []byte       // server bytes not handled yet
	rest          int          // server bytes after the message being handled

	wt       waiter // queued in the pool while queued
	queued   bool
	ep       *upstream.Endpoint
	counting bool // counted in clientsWaiting since waitSince
	since    time.Time
	reserved bool // reserve_pool_timeout has been acted on

	blocked  bool // waiting for a server connection: the client is not read
	handback bool // to go to the goroutine path once nothing is owed
	closing  bool // to be closed once its output is written
	ended    bool
	done     chan bool // true: the client ended; false: handed back
}

// serve moves c into the engine and returns once it ended (true) or was
// handed back (false, c.conn and c.be then read the client). False with c
// untouched when the engine cannot take it.
func (e *engine) serve(c *client) bool {
	fd, err := evloop.DupFD(c.conn)
	if err != nil {
		return false
	}
	orig := c.conn // the engine may hand back a new one before Do returns
	ec := &eclient{e: e, c: c, done: make(chan bool, 1)}
	ec.wt.fn = ec.notify
	ec.wt.eng = e
	ec.wt.local = func(s *server) { e.grants = append(e.grants, grant{ec, s}) }
	c.mu.Lock()
	c.eng = ec
	c.mu.Unlock()
	// Counted before the loop may serve it: a client can have its answer
	// before this goroutine runs again.
	c.p.engineClients.Add(1)
	if !e.part.Do(func() { e.add(ec, fd) }) {
		c.p.engineClients.Add(-1)
		syscall.Close(fd)
		c.mu.Lock()
		c.eng = nil
		c.mu.Unlock()
		return false
	}
	orig.Close() // the engine has its duplicate
	return <-ec.done
}

func (e *engine) add(ec *eclient, fd int) {
	e.clients[ec] = struct{}{}
	e.l.AddConn(&ec.src, fd, (*clientSide)(ec))
	ec.settle()
}

// end closes the clients left when the loop stops.
func (e *engine) end() {
	for ec := range e.clients {
		ec.gone()
	}
}

// tick acts on the waiting clients' timers: query_wait_timeout,
// reserve_pool_timeout, and a route that stopped being eligible.
func (e *engine) tick() {
	now := time.Now()
	cfg := &e.p.cfg
	for ec := range e.waiting.All() {
		pl := ec.c.pool
		waited := now.Sub(ec.since)
		switch {
		case cfg.QueryWaitTimeout > 0 && waited > cfg.QueryWaitTimeout:
			if pl.unwait(&ec.wt, false) {
				ec.unqueue()
				ec.waitEnd()
				pl.st.waitTimeouts.Add(1)
				ec.c.fail(errWaitTimeout)
				ec.settle()
			}
		case cfg.ReservePoolSize > 0 && waited > cfg.ReservePoolTimeout && !ec.reserved:
			ec.reserved = true
			if pl.unwait(&ec.wt, true) {
				ec.unqueue()
				go ec.open(nil, false)
			}
		case ec.wt.route != "" && !e.p.eligible(ec.wt.route):
			if pl.unwait(&ec.wt, false) {
				ec.unqueue()
				ec.resume()
			}
		}
	}
}

func (ec *eclient) unqueue() {
	ec.queued = false
	ec.e.waiting.Remove(ec)
}

// clientSide and serverSide are an eclient as the handler of its client's
// socket and of its server connection's: an event is one indirect call,
// with no closure per client to load on the way.
type (
	clientSide eclient
	serverSide eclient
)

func (h *clientSide) Event(ev uint32) { (*eclient)(h).clientEvent(ev) }
func (h *serverSide) Event(ev uint32) { (*eclient)(h).serverEvent(ev) }

// clientEvent serves the client socket.
func (ec *eclient) clientEvent(ev uint32) {
	if ev&evloop.Out != 0 {
		ec.flushClient()
	}
	if ec.ended {
		return
	}
	hup := ev&(evloop.Hup|evloop.Err|evloop.RdHup) != 0
	drained := !hup
	if ev&(evloop.In|evloop.Hup|evloop.Err|evloop.RdHup) != 0 {
		if ec.handback || ec.full() {
			// Not reading (only hang-ups were asked for).
			if hup {
				ec.gone()
				return
			}
			drained = false
		} else {
			// Read even while blocked (waiting for a server connection):
			// the bytes wait in ec.in, and the interest does not change
			// twice per wait.
			data, scratch, all, err := ec.e.recv(&ec.src, ec.in)
			drained = drained && all
			switch {
			case err == errAgain:
			case err != nil:
				ec.gone()
				return
			default:
				k := ec.process(data)
				if !ec.ended {
					keep(&ec.in, data, k, scratch)
				}
			}
		}
	}
	ec.settle()
	if drained {
		ec.e.l.Drained()
	}
}

// serverEvent serves the socket of the server connection held.
func (ec *eclient) serverEvent(ev uint32) {
	s := ec.srv
	if s == nil || ec.ended {
		return
	}
	if ev&evloop.Out != 0 {
		ec.flushServer() // settle goes on with what waited for it
	}
	drained := ev&(evloop.Hup|evloop.Err|evloop.RdHup) == 0
	if ec.srv != s {
		drained = false
	} else if ev&(evloop.In|evloop.Hup|evloop.Err|evloop.RdHup) != 0 {
		data, scratch, all, err := ec.e.recv(ec.ssrc, ec.sin)
		drained = drained && all
		switch {
		case err == errAgain:
		case err != nil:
			ec.serverFailed(s, err)
		default:
			k := ec.handleServer(s, data)
			if ec.srv == s {
				keep(&ec.sin, data, k, scratch)
			}
		}
	}
	ec.settle()
	if drained {
		ec.e.l.Drained()
	}
}

func (ec *eclient) serverFailed(s *server, err error) {
	c := ec.c
	c.mu.Lock()
	c.serverFailed(s, err)
	c.mu.Unlock()
}

// process consumes the complete client messages at the start of data,
// up to one that must wait (for a server connection) or go to the
// goroutine path, and returns how many bytes it consumed. The client's
// lock is taken once for the batch, not per message (an atomic pair per
// message showed in profiles); it is let go for what takes it itself.
func (ec *eclient) process(data []byte) int {
	c := ec.c
	k := 0
	c.mu.Lock()
	for !ec.blocked && !ec.handback && !ec.closing && !ec.ended {
		raw, err := nextMessage(data[k:])
		if err != nil {
			c.mu.Unlock()
			c.fatal("08P01", "invalid message: "+err.Error())
			return k
		}
		if raw == nil {
			break
		}
		if s := ec.srv; s != nil && len(s.wbuf) > maxBuffered {
			break // the server is not reading; settle stops reading the client
		}
		if s := c.srv; s != nil {
			if kind, ok := plainFrontend(raw); ok {
				// What consume would do, without decoding the message.
				if kind == eBind {
					c.pool.st.binds.Add(1)
				}
				s.wbuf = append(s.wbuf, raw...)
				c.push(s, entry{kind: kind})
				k += len(raw)
				continue
			}
		}
		msg, err := ec.e.decodeFrontend(raw[0], raw[5:])
		if err != nil {
			c.mu.Unlock()
			c.fatal("08P01", "invalid message: "+err.Error())
			return k
		}
		if msg == nil { // Terminate
			c.mu.Unlock()
			ec.gone()
			return k
		}
		eff := ec.e.effectOf(msg)
		if eff.Pin != "" || raw[0] == 'H' {
			ec.handback = true // this message is the goroutine path's first
			break
		}
		if c.srv == nil {
			switch raw[0] {
			case 'd', 'c', 'f':
				k += len(raw) // COPY data without a COPY: dropped, as on the goroutine path
				continue
			}
			c.mu.Unlock()
			ok := ec.acquire()
			c.mu.Lock()
			if !ok {
				break
			}
		}
		c.consume(c.srv, msg, raw, eff)
		k += len(raw)
	}
	c.mu.Unlock()
	return k
}

// plainFrontend reports the owed response of a client message that
// consume would forward as it is, whatever the client's statements: an
// Execute, a Sync, and the Bind, Describe and Close of the unnamed
// statement or portal (named ones may be renamed). These are most of an
// extended-protocol transaction, and they skip decoding (a measured part
// of the engine's time per message).
func plainFrontend(raw []byte) (entryKind, bool) {
	body := raw[5:]
	switch raw[0] {
	case 'E':
		return eExecute, true
	case 'S':
		return eSync, len(body) == 0
	case 'B':
		// Unnamed portal, unnamed statement; the server checks the rest.
		return eBind, len(body) >= 2 && body[0] == 0 && body[1] == 0
	case 'D', 'C':
		if len(body) != 2 || body[1] != 0 || body[0] != 'S' && body[0] != 'P' {
			return 0, false
		}
		if raw[0] == 'D' {
			return eDescribe, true
		}
		return eClose, true
	}
	return 0, false
}

// handleServer handles the complete server messages at the start of
// data and returns how many bytes it consumed.
func (ec *eclient) handleServer(s *server, data []byte) int {
	c := ec.c
	c.mu.Lock()
	defer c.mu.Unlock()
	k := 0
	for {
		raw, err := nextMessage(data[k:])
		if err != nil {
			c.serverFailed(s, fmt.Errorf("invalid message %w", err))
			break
		}
		if raw == nil {
			break
		}
		if c.passPlain(raw) {
			k += len(raw)
			continue
		}
		msg, err := ec.e.decodeBackend(raw[0], raw[5:])
		if err != nil {
			c.serverFailed(s, err)
			break
		}
		k += len(raw)
		ec.rest = len(data) - k
		released := c.handle(s, msg, raw)
		if released || c.srv != s {
			break
		}
	}
	ec.rest = 0
	return k
}

// acquire gets the client a server connection: true when it holds one
// now; else it waits (blocked) or failed.
func (ec *eclient) acquire() bool {
	c := ec.c
	pl := c.pool
	ep, err := c.p.route()
	if err != nil {
		var we *waitError
		if errors.As(err, &we) {
			// No route yet (a primary not known): the goroutine path's
			// wait, with its retries.
			ec.blocked = true
			go ec.open(nil, true)
			return false
		}
		c.fail(err)
		return false
	}
	ec.ep = ep
	addr := ""
	if ep != nil {
		addr = ep.Addr
	}
	ec.wt.since = ec.e.now()
	s, connect, queued := pl.tryTake(addr, &ec.wt)
	switch {
	case s != nil:
		pl.st.observeWait(0)
		return ec.ready(s)
	case connect:
		ec.blocked = true
		ec.waitStart()
		go ec.open(nil, false)
		return false
	case queued:
		ec.blocked, ec.queued, ec.reserved = true, true, false
		ec.waitStart()
		ec.e.waiting.Add(ec)
	}
	return false
}

func (ec *eclient) waitStart() {
	if !ec.counting {
		ec.counting = true
		ec.since = ec.wt.since
		ec.c.pool.st.clientsWaiting.Add(1)
	}
}

func (ec *eclient) waitEnd() {
	if ec.counting {
		ec.counting = false
		ec.c.pool.st.clientsWaiting.Add(-1)
		ec.c.pool.st.observeWait(ec.e.now().Sub(ec.since))
	}
}

// notify is the waiter's fn: the pool hands the client s (nil: a slot to
// open one). Called with the pool's mu held, from any goroutine.
func (ec *eclient) notify(s *server) {
	pl, addr := ec.c.pool, ec.wt.route
	if !ec.e.part.Do(func() { ec.granted(s) }) {
		go func() { // the loop has stopped
			if s != nil {
				pl.release(s, true)
			} else {
				pl.giveBack(addr)
			}
		}()
	}
}

func (ec *eclient) granted(s *server) {
	pl, addr := ec.c.pool, ec.wt.route
	ec.unqueue()
	if ec.ended || !ec.c.p.eligible(addr) {
		if s != nil && ec.ended {
			pl.release(s, true)
		} else if s != nil {
			pl.discard(s)
		} else {
			pl.giveBack(addr)
		}
		if !ec.ended {
			ec.resume() // route again
		}
		return
	}
	if s == nil {
		go ec.open(nil, false)
		return
	}
	if ec.ready(s) {
		ec.resume()
	}
}

// ready attaches s when it has the client's parameters; else they are
// applied on a goroutine first.
func (ec *eclient) ready(s *server) bool {
	if ec.c.pkey != s.akey {
		ec.blocked = true
		go ec.open(s, false)
		return false
	}
	ec.waitEnd()
	return ec.attach(s)
}

// open runs on its own goroutine: it connects (s nil) or, with acquire,
// waits as the goroutine path does, applies the client's parameters, and
// passes the result to the loop.
func (ec *eclient) open(s *server, acquire bool) {
	pl := ec.c.pool
	var err, perr error
	switch {
	case acquire:
		s, err = pl.acquire()
	case s == nil:
		s, err = pl.connectCounted(ec.ep)
		if err != nil && pl.p.cfg.Target != TargetAny && transient(err) {
			s, err = pl.acquire() // the route may be changing
		}
	}
	if err == nil {
		if perr = s.goConn(); perr == nil {
			perr = ec.c.applyParams(s)
		}
	}
	if !ec.e.part.Do(func() { ec.opened(s, err, perr) }) {
		if err == nil {
			pl.discard(s)
		}
	}
}

func (ec *eclient) opened(s *server, err, perr error) {
	ec.waitEnd()
	c := ec.c
	if ec.ended {
		if err == nil {
			if perr == nil {
				c.pool.release(s, true)
			} else {
				c.pool.discard(s)
			}
		}
		return
	}
	switch {
	case err != nil:
		c.fail(err)
	case perr != nil:
		c.paramsFailed(s, perr)
	default:
		if ec.attach(s) {
			ec.resume()
			return
		}
	}
	ec.settle()
}

// attach makes s the client's server connection, read and written by the
// engine; false, with the client to go to the goroutine path, for a
// server the engine cannot read raw (no socket, or bytes already read
// into its Frontend).
func (ec *eclient) attach(s *server) bool {
	c := ec.c
	c.mu.Lock()
	c.hold(s)
	c.mu.Unlock()
	if s.fd < 0 || s.conn != nil && s.fe.ReadBufferLen() != 0 {
		ec.blocked = false
		ec.handback = true
		return false
	}
	s.dropConn() // the socket is this loop's alone while it holds s
	ec.srv = s
	switch src, _ := s.hsrc.(*evloop.Conn); {
	case s.home == ec.e && src != nil:
		// Still in this loop's set from its last transaction here.
		ec.ssrc = src
		src.Handle((*serverSide)(ec))
	case s.home == nil:
		hs := &evloop.Conn{}
		ec.e.l.AddConn(hs, s.fd, (*serverSide)(ec))
		ec.ssrc = hs
		s.home, s.hsrc = ec.e, hs
		pl := ec.c.pool
		s.idleH = evloop.HandlerFunc(func(uint32) {
			// Readable while nobody here holds it: an idle server closing
			// (a FATAL from pg_terminate_backend, a server shutting down),
			// closed at once as pgbouncer does, so that no client gets it;
			// or it is another's now: stop watching it, the next
			// transaction here adds it again.
			if pl.takeClosing(s) {
				hs.Release()
				pl.discard(s)
				pl.p.log.Debug("idle server connection closed by the server", "server", s.addr, "user", pl.user, "database", pl.db)
				return
			}
			s.watched.Store(false)
			hs.Want(0)
		})
	default: // another engine's home: in this set while held only
		ec.ssrc = &evloop.Conn{}
		ec.e.l.AddConn(ec.ssrc, s.fd, (*serverSide)(ec))
	}
	return true
}

// resume goes on with the client's buffered messages once it holds a
// server connection (or must route again).
func (ec *eclient) resume() {
	ec.blocked = false
	ec.settle() // which processes ec.in
}

// dropServer takes s out of the loop before the pool may give it to
// anyone else (called by detach, with mu held). A server with bytes
// unsent or unread is closed rather than pooled.
func (ec *eclient) dropServer(s *server) {
	if ec.srv != s {
		return
	}
	if src, _ := s.hsrc.(*evloop.Conn); s.home == ec.e && src == ec.ssrc {
		// Stays in the set, served by the idle handler, until a client
		// here takes it again or it closes (which takes it out of the
		// set). Whoever else takes it meanwhile reads it while the idle
		// handler at most stops watching it.
		src.Handle(s.idleH.(evloop.Handler))
		if src.Want(evloop.In|evloop.RdHup) == nil {
			s.watched.Store(true)
		}
	} else {
		ec.ssrc.Release()
	}
	ec.ssrc, ec.srv = nil, nil
	if len(s.wbuf) > 0 || ec.rest > 0 || len(ec.sin) > 0 {
		s.retire = true
	}
	s.wbuf = s.wbuf[:0]
	ec.sin, ec.rest = ec.sin[:0], 0
}

// closeClient closes the client once its output is written (settle).
func (ec *eclient) closeClient() { ec.closing = true }

// settle writes what the last step queued, carries out a close or a
// hand-back that is due, and sets the sockets' interest from the state.
func (ec *eclient) settle() {
	if ec.ended {
		return
	}
	c := ec.c
	for {
		if s := ec.srv; s != nil && len(s.wbuf) > 0 {
			ec.flushServer()
		}
		// Client messages already read wait in ec.in when process stopped
		// for the server to read, or for a server connection: no readiness
		// report will come for them, so they go on here once they can.
		if ec.ended || len(ec.in) == 0 || ec.blocked || ec.handback || ec.closing ||
			ec.srv != nil && len(ec.srv.wbuf) > maxBuffered {
			break
		}
		k := ec.process(ec.in)
		if ec.ended || k == 0 {
			break
		}
		keep(&ec.in, ec.in, k, false)
	}
	if ec.ended {
		return
	}
	if len(c.out) > 0 {
		ec.flushClient()
	}
	if ec.ended {
		return
	}
	if ec.closing {
		ec.gone()
		return
	}
	if ec.handback {
		ec.handBack()
		return
	}
	mask := uint32(evloop.RdHup)
	if !ec.handback && !ec.full() && (ec.srv == nil || len(ec.srv.wbuf) <= maxBuffered) {
		mask |= evloop.In
	}
	if len(c.out) > 0 {
		mask |= evloop.Out
	}
	if err := ec.src.Want(mask); err != nil {
		ec.gone()
		return
	}
	if s := ec.srv; s != nil {
		var sm uint32
		if len(c.out) <= maxBuffered {
			sm |= evloop.In | evloop.RdHup
		}
		if len(s.wbuf) > 0 {
			sm |= evloop.Out
		}
		if err := ec.ssrc.Want(sm); err != nil {
			ec.serverFailed(s, err)
			ec.settle()
		}
	}
}

// full reports whether enough client bytes wait to stop reading: more
// than maxBuffered, beginning with a complete message (a message larger
// than that is read to its end).
func (ec *eclient) full() bool {
	in := ec.in
	return len(in) > maxBuffered && 1+int(binary.BigEndian.Uint32(in[1:5])) <= len(in)
}

// flushClient writes out as far as the client socket takes it.
func (ec *eclient) flushClient() {
	c := ec.c
	n, err := ec.src.Send(c.out)
	if err != nil {
		ec.gone()
		return
	}
	c.out = c.out[:copy(c.out, c.out[n:])]
	if len(c.out) == 0 && cap(c.out) > maxBuffered {
		c.out = nil
	}
}

// flushServer writes srv.wbuf as far as the server socket takes it.
func (ec *eclient) flushServer() {
	s := ec.srv
	n, err := ec.ssrc.Send(s.wbuf)
	if err != nil {
		ec.serverFailed(s, err)
		return
	}
	s.wbuf = s.wbuf[:copy(s.wbuf, s.wbuf[n:])]
	if len(s.wbuf) == 0 && cap(s.wbuf) > maxBuffered {
		s.wbuf = nil
	}
}

// gone ends the client: its server connection is closed if it is owed
// anything or inside a transaction (leave), its socket closed.
func (ec *eclient) gone() {
	if ec.ended {
		return
	}
	c := ec.c
	if ec.queued && c.pool.unwait(&ec.wt, false) {
		ec.unqueue()
	}
	ec.waitEnd()
	c.leave()
	ec.ended = true
	ec.unqueue()
	delete(ec.e.clients, ec)
	if ec.ssrc != nil { // not held through c (cannot happen; be safe)
		ec.ssrc.Release()
	}
	ec.src.Close(false)
	ec.done <- true
}

// handBack gives the client to the goroutine path: its socket, the bytes
// not consumed yet, and the server connection it holds, with what was
// read of it. The rest of its state (owed responses, output not written
// yet, server messages not sent yet) is in c and s, where the goroutine
// path takes it up (serve).
func (ec *eclient) handBack() {
	c := ec.c
	if s := ec.srv; s != nil {
		if err := s.goConn(); err != nil {
			ec.handback = false
			ec.serverFailed(s, err) // 08006, and the client is closed
			ec.settle()
			return
		}
		ec.ssrc.Release()
		if s.home == ec.e {
			s.home, s.hsrc, s.idleH = nil, nil, nil
			s.watched.Store(false)
		}
		ec.ssrc, ec.srv = nil, nil
		if len(ec.sin) > 0 {
			s.fe = pgproto3.NewFrontend(io.MultiReader(bytes.NewReader(bytes.Clone(ec.sin)), rawsys.NewReader(s.conn)), s.conn)
		}
		ec.sin = nil
	}
	rest := bytes.Clone(ec.in)
	ec.in = nil
	ec.ended = true
	delete(ec.e.clients, ec)
	ec.src.Release()
	conn, err := evloop.NetConn(ec.src.FD)
	if err != nil {
		c.leave()
		ec.done <- true
		return
	}
	var r io.Reader = rawsys.NewReader(conn)
	if len(rest) > 0 {
		r = io.MultiReader(bytes.NewReader(rest), r)
	}
	c.mu.Lock()
	c.eng = nil
	c.conn = conn
	c.be = pgproto3.NewBackend(r, conn)
	c.be.SetMaxBodyLen(maxMessage)
	c.mu.Unlock()
	c.p.handedBack.Add(1)
	c.p.log.Debug("client handed to the goroutine path", "user", c.user, "database", c.db)
	ec.done <- false
}

var errAgain = errors.New("no data")

// recv reads the socket once, into the scratch buffer when nothing is
// pending, else after the pending bytes (grown as needed). data is
// everything not handled yet; all reports that the read left the socket
// empty (a short read, or none ready).
func (e *engine) recv(sc *evloop.Conn, pending []byte) (data []byte, scratch, all bool, err error) {
	buf := e.scratch
	if len(pending) > 0 {
		if need := 16 << 10; cap(pending)-len(pending) < need {
			np := make([]byte, len(pending), max(2*cap(pending), len(pending)+32<<10))
			copy(np, pending)
			pending = np
		}
		buf = pending[len(pending):cap(pending)]
	}
	n, err := sc.Fill(buf)
	switch {
	case err == syscall.EAGAIN:
		return nil, false, true, errAgain
	case err != nil:
		return nil, false, false, err
	}
	if len(pending) == 0 {
		return buf[:n], true, n < len(buf), nil
	}
	return pending[:len(pending)+n], false, n < len(buf), nil
}

// nextMessage returns the message at the start of b (type byte, length,
// body); nil while it has not all arrived, an error for a length out of
// bounds.
func nextMessage(b []byte) ([]byte, error) {
	if len(b) < 5 {
		return nil, nil
	}
	n := int(binary.BigEndian.Uint32(b[1:5]))
	if n < 4 || n > maxMessage {
		return nil, fmt.Errorf("length %d", n)
	}
	if len(b) < 1+n {
		return nil, nil
	}
	return b[:1+n], nil
}

// keep stores in *dst the bytes of data after the first k.
func keep(dst *[]byte, data []byte, k int, scratch bool) {
	rest := data[k:]
	if scratch {
		if len(rest) > 0 {
			*dst = append((*dst)[:0], rest...)
		}
		return
	}
	if k == 0 && len(data) > 0 {
		// Nothing consumed (a message still arriving): no copy, which
		// would move the whole of a large message once per read.
		*dst = data
		return
	}
	*dst = data[:copy(data, rest)]
	if len(*dst) == 0 && cap(*dst) > maxBuffered {
		*dst = nil
	}
}

// Bounds of engine.effects: the texts remembered, and the longest.
const (
	maxEffects    = 256
	maxEffectText = 2 << 10
)

// effectOf is effectOf, with the effects of the unnamed statement's
// texts remembered: an application parses the same few texts again and
// again, and lexing one costs more than looking it up.
func (e *engine) effectOf(msg pgproto3.FrontendMessage) pgsql.Effect {
	p, ok := msg.(*pgproto3.Parse)
	if !ok || p.Name != "" || len(p.Query) > maxEffectText {
		return effectOf(msg)
	}
	if eff, ok := e.effects[p.Query]; ok {
		return eff
	}
	eff := effectOf(msg)
	if len(e.effects) >= maxEffects {
		clear(e.effects)
	}
	e.effects[strings.Clone(p.Query)] = eff
	return eff
}

// cstring returns the bytes of b before its first NUL; false without one.
func cstring(b []byte) ([]byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, false
	}
	return b[:i], true
}

// inPlace is b as a string that shares b's bytes: for a text read only
// while b is live and unchanged (the message being processed), never kept.
func inPlace(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// decodeFrontend decodes a client message as far as consume reads it; nil
// for Terminate. The Query, and the Parse and Bind of the unnamed
// statement, the bulk of a transaction pooler's traffic, are read in place
// without the copies pgproto3's Decode makes.
func (e *engine) decodeFrontend(t byte, body []byte) (pgproto3.FrontendMessage, error) {
	var m pgproto3.FrontendMessage
	switch t {
	case 'Q':
		q, ok := cstring(body)
		if !ok || len(body) != len(q)+1 {
			return nil, errors.New("invalid Query")
		}
		e.query.String = inPlace(q)
		return &e.query, nil
	case 'P':
		if len(body) > 0 && body[0] == 0 {
			// The unnamed statement: only its text is read (effectOf).
			q, ok := cstring(body[1:])
			if !ok {
				return nil, errors.New("invalid Parse")
			}
			e.parse = pgproto3.Parse{Query: inPlace(q)}
			return &e.parse, nil
		}
		m = &e.parse
	case 'B':
		if portal, ok := cstring(body); ok && len(body) > len(portal)+1 && body[len(portal)+1] == 0 {
			// Of the unnamed statement: only the statement's name is read
			// (consume); the server checks the rest.
			e.bind = pgproto3.Bind{}
			return &e.bind, nil
		}
		m = &e.bind
	case 'D':
		m = &e.describe
	case 'C':
		m = &e.close
	case 'E':
		return &e.execute, nil // forwarded raw
	case 'S':
		return &e.sync, nil
	case 'H':
		return &e.flush, nil
	case 'F':
		return &e.funcCall, nil
	case 'd':
		return &e.copyData, nil
	case 'c':
		return &e.copyDone, nil
	case 'f':
		return &e.copyFail, nil
	case 'X':
		return nil, nil
	default:
		return nil, fmt.Errorf("unexpected message type %q", t)
	}
	if err := m.Decode(body); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeBackend decodes a server message as far as handle reads it.
func (e *engine) decodeBackend(t byte, body []byte) (pgproto3.BackendMessage, error) {
	var m pgproto3.BackendMessage
	switch t {
	case 'E':
		m = &e.errResp
	case 'S':
		m = &e.paramStatus
	case 'Z':
		m = &e.ready
	case '1':
		return &e.parseDone, nil
	case '2':
		return &e.bindDone, nil
	case '3':
		return &e.closeDone, nil
	case 'T':
		return &e.rowDesc, nil
	case 'n':
		return &e.noData, nil
	case 'C':
		return &e.cmdDone, nil
	case 'I':
		return &e.emptyQuery, nil
	case 's':
		return &e.suspended, nil
	case 'G':
		return &e.copyIn, nil
	case 'W':
		return &e.copyBoth, nil
	case 'D', 'N', 'A', 't', 'H', 'd', 'c', 'V', 'K', 'v':
		return &e.other, nil
	default:
		return nil, fmt.Errorf("unexpected server message type %q", t)
	}
	if err := m.Decode(body); err != nil {
		return nil, err
	}
	return m, nil
}
