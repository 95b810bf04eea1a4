package redisproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/rawsys"
	"github.com/attache-proxy/attache/internal/resp"
)

// engine serves plain TCP clients and its own server connections on one
// goroutine over a level-triggered epoll set, as twemproxy does, instead
// of a reader and a writer goroutine per client and per server
// connection.
//
// Why: at one command in flight per client (redis-benchmark -P 1) the cost
// of the goroutine design was wake-ups and system calls, not parsing: each
// command parked and woke four goroutines and read its client socket twice
// (Go's edge-triggered netpoller makes a reader read until EAGAIN). Here a
// socket is read once per readiness report (a short read means drained;
// level-triggered epoll reports any rest), commands for a shard read in
// one epoll batch go out in one write, and replies finished in a batch go
// to each client in one write. See docs/redis.md for the figures.
//
// Everything below the run loop belongs to the engine goroutine; other
// goroutines reach it only through e.part.Do. The loop is one of the
// process's (evloop.Group), shared with other engines.
type engine struct {
	p    *Pool
	loop *evloop.Loop
	part *evloop.Part
	done <-chan struct{} // closed when the engine has left its loop

	// owned by the engine goroutine
	clients map[*eclient]struct{}
	// conns are the engine's server_connections to each server, by
	// server.id, made when the server is first sent to; nil for a server
	// not sent to yet or gone (a hole per shard that left the cluster).
	conns   [][]*esconn
	dirtyC  []*eclient
	dirtyS  []*esconn
	timerOn bool
	tick    time.Duration
	free    []*slot
	freeR   []*resp.Reader // of closed clients, for the next ones
	freeOut [][]byte
}

// maxFree bounds the buffers an engine keeps for clients to come.
const maxFree = 64

// eclient is one client connection of an engine.
type eclient struct {
	session
	fd       int
	conn     evloop.Conn  // the socket; its Out: replies to write
	es       *evloop.Conn // &conn while in a loop's set
	src      fdReader
	rd       *resp.Reader
	slots    fifo[*slot] // replies owed, in order
	paused   bool        // maxQueued replies owed: not reading
	readDone bool        // EOF from the client: close once every reply is written
	closing  bool        // QUIT or protocol error: close once out is written
	closed   bool
	dirty    bool
	done     chan struct{}
	// moveTo: c left the engine for this pool, which serves by goroutines
	moveTo *Pool
}

// slot is one reply a client is owed. Its slices are kept when it is
// reused.
type slot struct {
	left int    // parts outstanding
	out  []byte // the reply once left is 0
	buf  []byte // storage owned by the slot
	quit bool
	// several parts: their results go into arena (at span[2j:2j+2]) until
	// fan merges them
	fan    fan
	shards []*server
	span   []int
	arena  []byte
}

// esconn is one engine connection to a shard.
type esconn struct {
	s       *server
	fd      int // -1: not connected
	conn    evloop.Conn
	dialing bool
	src     fdReader
	rd      *resp.Reader
	// out holds the commands of pending from head on, in order: those up
	// to written went out, the rest wait for the socket. A command's bytes
	// are kept until its reply, to be sent again on a new connection.
	out     []byte
	head    int
	written int
	pending fifo[ereq] // sent or queued, awaiting replies in order
	last    int64      // when a reply last came (or the first request went)
	dirty   bool
}

// ereq is one request awaiting its reply.
type ereq struct {
	c     *eclient
	sl    *slot
	i     int // part index
	start int64
	n     int  // its bytes in out
	again bool // read-only (part.again)
	sent  bool // was on a connection that closed before its reply
}

// newEngine makes an engine of pool p on loop l.
func newEngine(p *Pool, l *evloop.Loop) *engine {
	e := &engine{p: p, loop: l, clients: map[*eclient]struct{}{}}
	// The timeout sweep runs only while requests are in flight, a few
	// times per timeout.
	if t := p.opts.Timeout; t > 0 {
		e.tick = min(max(t/4, time.Millisecond), 100*time.Millisecond)
	}
	e.part = l.Join(0, e.sweep, e.flush, e.teardown)
	e.done = e.part.Done()
	return e
}

// serve moves client c into the engine and returns once it is closed;
// false (c untouched) if c is not a plain TCP connection.
func (e *engine) serve(h *Handler, n int, c net.Conn) bool {
	if _, ok := c.(*net.TCPConn); !ok {
		return false
	}
	fd, err := evloop.DupFD(c)
	if err != nil {
		return false
	}
	c.Close()
	cl := &eclient{session: session{h: h, p: e.p, n: n, authed: h.Password == ""}, fd: fd, done: make(chan struct{})}
	cl.src.c = &cl.conn
	if !e.part.Do(func() { e.addClient(cl) }) {
		unix.Close(fd) // the pool is closed
		e.p.leave()
		return true
	}
	<-cl.done // closeClient counted it out of its last pool, or it moved
	if q := cl.moveTo; q != nil {
		conn, err := evloop.NetConn(cl.fd)
		if err != nil {
			q.leave()
			return true
		}
		g := &gclient{c: conn, p: q}
		q.track(g, true)
		defer g.leaveAll()
		h.serveGoroutines(g, n, cl.authed)
	}
	return true
}

// moveClients moves the clients at a command boundary to the pool that
// replaced e's (Pool.Replace); the others move when they reach one.
func (e *engine) moveClients() {
	e.part.Do(func() {
		for c := range e.clients {
			if e.idle(c) {
				e.move(c)
			}
		}
	})
}

// idle reports whether c is at a command boundary: nothing in flight,
// every reply written, no command buffered whole.
func (e *engine) idle(c *eclient) bool {
	return !c.closed && !c.closing && !c.readDone && !c.paused && !c.dirty && c.slots.len() == 0 && !c.conn.Pending()
}

// move hands idle client c, its buffers and session, to an engine of the
// pool that replaced e's, or to its ServeConn goroutine when that pool
// serves by goroutines (TLS shards), once no partial command is buffered;
// false (c stays) when there is no such pool or a command is partly read.
func (e *engine) move(c *eclient) bool {
	if e.p.next.Load() == nil {
		return false
	}
	q := e.p.successor()
	if q == nil {
		return false
	}
	to := q.engine(c.n)
	if to == nil && c.rd.Buffered() > 0 {
		q.leave()
		return false
	}
	delete(e.clients, c)
	c.es.Release()
	c.es = nil
	c.p.leave()
	c.p = q
	if to == nil {
		c.closed, c.moveTo = true, q
		close(c.done)
		return true
	}
	if !to.part.Do(func() { to.adopt(c) }) {
		c.closed = true
		unix.Close(c.fd)
		close(c.done)
		q.leave()
	}
	return true
}

// adopt serves client c that moved from another engine.
func (e *engine) adopt(c *eclient) {
	e.clients[c] = struct{}{}
	e.loop.AddConn(&c.conn, c.fd, evloop.HandlerFunc(func(ev uint32) { e.clientEvent(c, ev) }))
	c.es = &c.conn
	if err := c.es.Settle(true); err != nil {
		e.closeClient(c)
		return
	}
	e.move(c) // e's pool was replaced too
}

// stop makes the engine close its clients and server connections and
// leave its loop (done is closed then).
func (e *engine) stop() { e.part.Leave() }

// teardown is the end of the engine goroutine: every client and server
// connection is closed (replies still owed are dropped). Nothing can be
// queued after it.
func (e *engine) teardown() {
	for c := range e.clients {
		e.closeClient(c)
	}
	for _, cs := range e.conns {
		for _, sc := range cs {
			if sc.fd >= 0 {
				sc.conn.Close(false)
				sc.fd = -1
				sc.s.connDown()
			}
			sc.pending, sc.out, sc.rd, sc.head, sc.written = fifo[ereq]{}, nil, nil, 0, 0
		}
	}
}

// flush writes what the batch queued: commands to shards first, then
// replies to clients, one write each.
func (e *engine) flush() {
	for len(e.dirtyS) > 0 || len(e.dirtyC) > 0 {
		for len(e.dirtyS) > 0 {
			sc := e.dirtyS[len(e.dirtyS)-1]
			e.dirtyS = e.dirtyS[:len(e.dirtyS)-1]
			sc.dirty = false
			if sc.fd >= 0 && len(sc.out) > sc.written {
				e.writeServer(sc)
			}
		}
		for len(e.dirtyC) > 0 {
			c := e.dirtyC[len(e.dirtyC)-1]
			e.dirtyC = e.dirtyC[:len(e.dirtyC)-1]
			c.dirty = false
			if c.closed {
				continue
			}
			if c.conn.Pending() && !e.writeClient(c) {
				continue
			}
			// A paused client resumes with the commands it has buffered
			// (no read: epoll reports the socket if it holds more).
			if c.paused && c.slots.len() < maxQueued/2 {
				c.paused = false
				c.src.budget = 0
				e.readClient(c)
				if c.closed {
					continue
				}
			}
			e.finishClient(c)
		}
	}
}

func (e *engine) markClient(c *eclient) {
	if !c.dirty {
		c.dirty = true
		e.dirtyC = append(e.dirtyC, c)
	}
}

func (e *engine) markServer(sc *esconn) {
	if !sc.dirty {
		sc.dirty = true
		e.dirtyS = append(e.dirtyS, sc)
	}
}

// --- clients

func (e *engine) addClient(c *eclient) {
	if n := len(e.freeR); n > 0 {
		c.rd, e.freeR = e.freeR[n-1], e.freeR[:n-1]
		c.rd.Reset(&c.src)
	} else {
		c.rd = resp.NewReader(&c.src)
	}
	c.rd.RequireAuth(!c.authed)
	e.clients[c] = struct{}{}
	e.loop.AddConn(&c.conn, c.fd, evloop.HandlerFunc(func(ev uint32) { e.clientEvent(c, ev) }))
	c.es = &c.conn
	if err := c.es.Settle(true); err != nil {
		e.closeClient(c)
		return
	}
	if n := len(e.freeOut); n > 0 {
		c.conn.Out, e.freeOut = e.freeOut[n-1], e.freeOut[:n-1]
	}
	e.move(c) // a client that came as its pool was replaced
}

func (e *engine) clientEvent(c *eclient, events uint32) {
	if events&evloop.Err != 0 {
		e.closeClient(c)
		return
	}
	if events&evloop.Out != 0 && c.conn.Pending() {
		e.markClient(c)
	}
	if events&(evloop.In|evloop.Hup|evloop.RdHup) != 0 && c.es.Mask()&evloop.In != 0 {
		c.src.budget, c.src.short = 1, false
		e.readClient(c)
		if !c.closed {
			e.markClient(c)
		}
		// Drained: the one read of this report was short (a paused client
		// reads nothing); the flush after the batch sets what it waits for.
		if !c.closed && !c.paused && c.src.budget == 0 && c.src.short && events&(evloop.Hup|evloop.RdHup) == 0 {
			e.loop.Drained()
		}
	} else if events&evloop.In == 0 && events&(evloop.Hup|evloop.RdHup) == 0 {
		e.loop.Drained() // Out alone: the flush after the batch writes
	}
}

// readClient serves the commands in c's buffer and what one read brings.
func (e *engine) readClient(c *eclient) {
	for !c.closing && !c.readDone {
		if c.slots.len() >= maxQueued {
			c.paused = true
			return
		}
		args, raw, err := c.rd.ReadCommand()
		if err != nil {
			var pe *resp.ProtocolError
			switch {
			case err == unix.EAGAIN:
			case errors.As(err, &pe):
				e.exec(c, plan{ready: resp.AppendError(nil, "ERR "+pe.Error()), quit: true})
			case err == io.EOF:
				c.readDone = true // replies owed are still written
			default:
				e.closeClient(c)
			}
			return
		}
		if len(args) == 0 {
			continue
		}
		e.exec(c, c.serve(c.rd, args, raw))
	}
}

// exec queues the reply slot of a plan and sends its requests.
func (e *engine) exec(c *eclient, pl plan) {
	sl := e.newSlot()
	sl.quit = pl.quit
	if pl.quit {
		c.closing = true
	}
	c.slots.push(sl)
	if pl.parts == nil {
		sl.out = pl.ready
		e.advance(c)
		return
	}
	sl.left = len(pl.parts)
	if len(pl.parts) > 1 {
		sl.fan.cmd = pl.fan.cmd
		sl.fan.keyPart = append(sl.fan.keyPart[:0], pl.fan.keyPart...)
		sl.shards, sl.span, sl.arena = sl.shards[:0], sl.span[:0], sl.arena[:0]
		for _, pt := range pl.parts {
			sl.shards = append(sl.shards, pt.s)
			sl.span = append(sl.span, 0, 0)
		}
	}
	for i, pt := range pl.parts {
		e.send(c, sl, i, pt)
	}
}

func (e *engine) newSlot() *slot {
	if n := len(e.free); n > 0 {
		sl := e.free[n-1]
		e.free = e.free[:n-1]
		return sl
	}
	return &slot{}
}

func (e *engine) freeSlot(sl *slot) {
	*sl = slot{buf: keep(sl.buf), arena: keep(sl.arena), span: sl.span[:0],
		shards: sl.shards[:0], fan: fan{keyPart: keepKeys(sl.fan.keyPart)}}
	clear(sl.shards[:cap(sl.shards)])
	e.free = append(e.free, sl)
}

// keep returns b emptied for reuse, or nil if it grew large.
func keep(b []byte) []byte {
	if cap(b) > 4<<10 {
		return nil
	}
	return b[:0]
}

// complete records the result of part i of slot sl.
func (e *engine) complete(c *eclient, sl *slot, i int, out []byte) {
	if c.closed {
		return
	}
	sl.left--
	if len(sl.shards) > 0 {
		sl.span[2*i] = len(sl.arena)
		sl.arena = append(sl.arena, out...)
		sl.span[2*i+1] = len(sl.arena)
		if sl.left == 0 {
			var o [8][]byte
			outs := o[:0]
			for j := range sl.shards {
				outs = append(outs, sl.arena[sl.span[2*j]:sl.span[2*j+1]])
			}
			sl.buf = sl.fan.merge(sl.buf[:0], outs, sl.shards)
			sl.out = sl.buf
			e.advance(c)
		}
		return
	}
	if *c.slots.front() == sl { // the next reply owed: straight to the output
		c.slots.pop()
		c.conn.Out = append(c.conn.Out, out...)
		e.freeSlot(sl)
		e.advance(c)
		e.markClient(c)
		return
	}
	sl.buf = append(sl.buf[:0], out...)
	sl.out = sl.buf
}

// advance moves the finished replies at the front of c's queue to its
// output.
func (e *engine) advance(c *eclient) {
	for c.slots.len() > 0 {
		sl := *c.slots.front()
		if sl.left > 0 {
			return
		}
		c.slots.pop()
		c.conn.Out = append(c.conn.Out, sl.out...)
		e.markClient(c)
		e.freeSlot(sl)
	}
}

// writeClient writes c's output; false if c was closed.
func (e *engine) writeClient(c *eclient) bool {
	if err := c.conn.Flush(); err != nil {
		e.closeClient(c)
		return false
	}
	return true
}

// finishClient closes c when it is done, else sets its epoll interest.
func (e *engine) finishClient(c *eclient) {
	if !c.conn.Pending() && (c.closing && c.slots.len() == 0 || c.readDone && c.slots.len() == 0) {
		e.closeClient(c)
		return
	}
	if e.idle(c) && e.move(c) {
		return
	}
	if err := c.es.Settle(!c.paused && !c.closing && !c.readDone); err != nil {
		e.closeClient(c)
	}
}

// closeClient closes c at once. Replies still coming for it are dropped
// when they arrive (its requests stay queued on the shards' connections,
// whose reply order they hold).
func (e *engine) closeClient(c *eclient) {
	if c.closed {
		return
	}
	c.closed = true
	delete(e.clients, c)
	if c.es != nil {
		c.es.Close(false)
		c.es = nil
	} else {
		unix.Close(c.fd)
	}
	close(c.done)
	c.p.leave()
	// Nothing reads or writes a closed client's buffers again: they serve
	// the next clients, so that connection churn makes little garbage.
	if len(e.freeR) < maxFree {
		e.freeR = append(e.freeR, c.rd)
	}
	if len(e.freeOut) < maxFree && cap(c.conn.Out) > 0 && cap(c.conn.Out) <= 64<<10 {
		e.freeOut = append(e.freeOut, c.conn.Out[:0])
	}
	c.rd, c.conn.Out = nil, nil
}

// --- server connections

// send queues part i of slot sl on c's connection to the part's shard.
func (e *engine) send(c *eclient, sl *slot, i int, pt part) {
	cs := e.serverConns(pt.s)
	sc := cs[(c.n/len(e.p.engines.all))%len(cs)]
	if sc.pending.len() >= maxInFlight {
		err := fmt.Errorf("shard %s (%s): more than %d commands in flight", sc.s.name, sc.s.addr, maxInFlight)
		e.complete(c, sl, i, e.p.result(sc.s, nil, err, 0))
		return
	}
	if sc.pending.len() == 0 {
		sc.last = e.loop.Now()
		e.armTimer()
	}
	sc.pending.push(ereq{c: c, sl: sl, i: i, start: e.loop.Now(), n: len(pt.raw), again: pt.again})
	sc.out = append(sc.out, pt.raw...)
	switch {
	case sc.fd >= 0:
		e.markServer(sc)
	case !sc.dialing:
		e.dial(sc)
	}
}

// dial connects (and authenticates) on another goroutine, dialling again
// within the shard's window while it refuses (server.connect); what is
// queued meanwhile is written once connected.
func (e *engine) dial(sc *esconn) {
	sc.dialing = true
	e.part.Dial(sc.s.connect, func(fd int, err error) { e.connected(sc, fd, err) })
}

func (e *engine) connected(sc *esconn, fd int, err error) {
	sc.dialing = false
	if err == nil && sc.s.gone.Load() {
		unix.Close(fd)
		err = errRemoved
	}
	if err != nil {
		e.failConn(sc, err, failAll)
		return
	}
	sc.fd = fd
	sc.src = fdReader{c: &sc.conn}
	sc.rd = resp.NewReader(&sc.src)
	sc.s.connUp()
	e.loop.AddConn(&sc.conn, fd, evloop.HandlerFunc(func(ev uint32) { e.serverEvent(sc, ev) }))
	if err := sc.conn.Settle(true); err != nil {
		e.failConn(sc, err, failSent)
		return
	}
	sc.last = time.Now().UnixNano()
	e.markServer(sc)
}

func (e *engine) serverEvent(sc *esconn, events uint32) {
	if events&evloop.Err != 0 {
		e.failConn(sc, rawsys.SockError(sc.fd), resendReads)
		return
	}
	if events&evloop.Out != 0 && len(sc.out) > sc.written {
		e.markServer(sc)
	}
	if events&(evloop.In|evloop.Hup|evloop.RdHup) == 0 {
		e.loop.Drained() // Out alone: the flush after the batch writes
		return
	}
	sc.src.budget, sc.src.short = 1, false
	for {
		raw, err := sc.rd.ReadReply()
		if err != nil {
			switch {
			case err == unix.EAGAIN:
				// Drained: the one read of this report was short.
				if sc.src.budget == 0 && sc.src.short && events&(evloop.Hup|evloop.RdHup) == 0 {
					e.loop.Drained()
				}
				return
			case err == io.EOF:
				err = errors.New("connection closed")
			}
			e.failConn(sc, err, resendReads)
			return
		}
		if sc.pending.len() == 0 {
			e.failConn(sc, errors.New("reply to no command"), failSent)
			return
		}
		r := sc.pending.pop()
		e.answered(sc, r.n)
		sc.last = e.loop.Now()
		sc.s.ok()
		e.complete(r.c, r.sl, r.i, e.p.result(sc.s, raw, nil, time.Duration(e.loop.Now()-r.start)))
	}
}

// writeServer writes sc's queued commands, keeping what the socket does not
// take for EPOLLOUT.
func (e *engine) writeServer(sc *esconn) {
	b := sc.out[sc.written:]
	n, err := sc.conn.Send(b)
	sc.written += n
	if err != nil {
		e.failConn(sc, err, resendReads)
		return
	}
	m := uint32(evloop.In | evloop.RdHup)
	if n < len(b) {
		m |= evloop.Out
	}
	e.serverMask(sc, m)
}

// answered drops the n bytes of the command whose reply came from out.
func (e *engine) answered(sc *esconn, n int) {
	sc.head += n
	switch {
	case sc.head == len(sc.out):
		// Server connections are few and carry every client's commands:
		// their buffer is kept up to a larger size than a client's.
		sc.out, sc.head, sc.written = sc.out[:0], 0, 0
		if cap(sc.out) > 1<<20 {
			sc.out = nil
		}
	case sc.head >= 64<<10 && 2*sc.head >= len(sc.out):
		k := copy(sc.out, sc.out[sc.head:])
		sc.out, sc.written, sc.head = sc.out[:k], sc.written-sc.head, 0
	}
}

func (e *engine) serverMask(sc *esconn, m uint32) {
	if err := sc.conn.Want(m); err != nil {
		e.failConn(sc, err, failSent)
	}
}

// What failConn does with the requests of a failed connection.
type failMode int

const (
	failAll     failMode = iota // the shard cannot be reached: fail everything
	failSent                    // fail what went out, send the rest on a new connection
	resendReads                 // also send again the read-only commands that went out (once)
)

// failConn closes sc and fails requests in flight and queued on it with an
// error naming the shard, as the goroutine path does: every one with
// failAll, else the ones that went out (a write may have run: it is never
// sent twice), except, with resendReads, read-only commands sent for the
// first time. The requests kept are dialled for again at once, in order.
func (e *engine) failConn(sc *esconn, err error, mode failMode) {
	s := sc.s
	if sc.fd >= 0 {
		sc.conn.Close(false)
		sc.fd = -1
		sc.rd = nil
		s.connDown()
	}
	s.failed(err)
	msg := fmt.Errorf("shard %s (%s): %w", s.name, s.addr, err)
	if sc.written > 0 {
		msg = fmt.Errorf("shard %s (%s): %w before the reply", s.name, s.addr, err)
	}
	// Kept commands move down in out, in order; pending is rotated.
	from, to := sc.head, 0
	for range sc.pending.len() {
		r := sc.pending.pop()
		start := from
		from += r.n
		went := start < sc.written
		keep := mode != failAll && (!went || mode == resendReads && r.again && !r.sent)
		if !keep {
			e.complete(r.c, r.sl, r.i, e.p.result(s, nil, msg, time.Duration(e.loop.Now()-r.start)))
			continue
		}
		r.sent = r.sent || went
		to += copy(sc.out[to:], sc.out[start:from])
		sc.pending.push(r)
	}
	sc.out, sc.head, sc.written = sc.out[:to], 0, 0
	if sc.pending.len() > 0 && !sc.dialing {
		e.dial(sc)
	}
}

// serverConns returns the engine's connections to s, made on first use.
func (e *engine) serverConns(s *server) []*esconn {
	if s.id < len(e.conns) && e.conns[s.id] != nil {
		return e.conns[s.id]
	}
	if s.id >= len(e.conns) {
		e.conns = append(e.conns, make([][]*esconn, s.id+1-len(e.conns))...)
	}
	cs := make([]*esconn, len(s.sc))
	for i := range cs {
		cs[i] = &esconn{s: s, fd: -1}
	}
	e.conns[s.id] = cs
	if s.gone.Load() {
		// Planned on a ring from before s left: drop sees these too.
		e.drop(s)
	}
	return cs
}

// drop closes the engine's connections to s, whose endpoint left the
// cluster; what is in flight or queued on them fails.
func (e *engine) drop(s *server) {
	e.part.Do(func() {
		if s.id >= len(e.conns) {
			return
		}
		for _, sc := range e.conns[s.id] {
			e.failConn(sc, errRemoved, failAll)
		}
		e.conns[s.id] = nil
	})
}

// --- timeouts

func (e *engine) armTimer() {
	if e.tick == 0 || e.timerOn {
		return
	}
	e.timerOn = true
	e.part.SetTick(e.tick)
}

// sweep fails the connections whose shard has not replied within the
// timeout (since the last reply, or since the first request in flight),
// and stops the timer when nothing is in flight.
func (e *engine) sweep() {
	timeout := int64(e.p.opts.Timeout)
	busy := false
	for _, cs := range e.conns {
		for _, sc := range cs {
			if sc.pending.len() == 0 || sc.fd < 0 {
				busy = busy || sc.pending.len() > 0
				continue
			}
			if e.loop.Now()-sc.last > timeout {
				e.failConn(sc, fmt.Errorf("no reply within %v", e.p.opts.Timeout), failSent)
				continue
			}
			busy = true
		}
	}
	if !busy {
		e.timerOn = false
		e.part.SetTick(0)
	}
}

// --- system calls

// fdReader is the io.Reader under a resp.Reader: it makes at most budget
// reads (one per readiness report) and then says EAGAIN; short records
// that the last read left the socket empty.
type fdReader struct {
	c      *evloop.Conn
	budget int
	short  bool
}

func (f *fdReader) Read(b []byte) (int, error) {
	if f.budget == 0 {
		return 0, unix.EAGAIN
	}
	f.budget--
	n, err := f.c.Fill(b)
	f.short = n < len(b) && err != io.EOF
	return n, err
}
