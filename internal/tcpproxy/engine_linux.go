package tcpproxy

import (
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/rawsys"
)

// Engine pumps plain TCP connection pairs on one event loop (an
// evloop.Part of the process's loop), over a level-triggered epoll set,
// the way HAProxy does, instead of two goroutines per connection blocked
// in Read.
//
// Why: on loopback the cost of a proxy is syscalls and wake-ups. A goroutine
// pump reads until EAGAIN (Go's netpoller is edge-triggered, so every
// message costs a read that fails) and parks after every message; here a
// read happens only when epoll says the socket is readable, a short read is
// taken as drained, and one epoll_wait serves every ready connection. That is
// four syscalls per request/response instead of six. See
// docs/tcp-fast-path.md for the measurements.
//
// Only plain TCP goes through an engine: TLS needs crypto/tls and uses
// Pipe. A pair's file descriptors are duplicated from the net.Conns, which
// are then closed, so Go's poller no longer watches them.
type Engine struct {
	part *evloop.Part
	loop *evloop.Loop

	// owned by the loop goroutine
	pairs map[*Pair]struct{}
	buf   []byte
}

// Pair is one proxied connection inside an Engine.
type Pair struct {
	e      *Engine
	a, b   half // a: the application side, b: the upstream side
	idle   int64
	last   int64
	done   chan struct{}
	closed bool
}

type half struct {
	evloop.Conn // its Out: bytes read from the peer the socket has not taken
	p           *Pair
	peer        *half
	count       func(int)
	readDone    bool // EOF read from the socket
	shutOut     bool // SHUT_WR sent to the socket
}

// sweepEvery is how often idle pairs are looked for.
const sweepEvery = time.Second

// NewEngine makes an engine on loop l.
func NewEngine(l *evloop.Loop) *Engine {
	e := &Engine{loop: l, pairs: map[*Pair]struct{}{}, buf: make([]byte, 64<<10)}
	e.part = l.Join(sweepEvery, e.sweep, nil, e.closeAll)
	return e
}

// Add moves the pair (client, up) into the engine and returns it. Both must
// be *net.TCPConn; they are closed here (the engine keeps duplicates of
// their descriptors). On error the conns are left as they were.
func (e *Engine) Add(client, up net.Conn, idle time.Duration, cnt Counters) (*Pair, error) {
	fa, err := evloop.DupFD(client)
	if err != nil {
		return nil, err
	}
	fb, err := evloop.DupFD(up)
	if err != nil {
		unix.Close(fa)
		return nil, err
	}
	client.Close()
	up.Close()
	p := &Pair{e: e, idle: int64(idle), done: make(chan struct{})}
	p.a = half{p: p, count: cnt.ToUpstream}
	p.b = half{p: p, count: cnt.FromUpstream}
	p.a.peer, p.b.peer = &p.b, &p.a
	if !e.part.Do(func() { e.register(p, fa, fb) }) {
		unix.Close(fa)
		unix.Close(fb)
		close(p.done)
	}
	return p, nil
}

// Done is closed when the pair has ended and its descriptors are closed.
func (p *Pair) Done() <-chan struct{} { return p.done }

// Close ends the pair at once (the endpoint turned unhealthy, or shutdown).
// It is safe from any goroutine and idempotent.
func (p *Pair) Close() error {
	p.e.part.Do(func() { p.e.finish(p, false) })
	return nil
}

// Close ends every pair and takes the engine off its loop.
func (e *Engine) Close() { e.part.Leave() }

// closeAll ends every pair, as the engine leaves its loop.
func (e *Engine) closeAll() {
	for p := range e.pairs {
		e.finish(p, false)
	}
}

func (e *Engine) register(p *Pair, fa, fb int) {
	p.last = e.loop.Now()
	if p.last == 0 {
		p.last = time.Now().UnixNano()
	}
	e.pairs[p] = struct{}{}
	e.loop.AddConn(&p.a.Conn, fa, &p.a)
	e.loop.AddConn(&p.b.Conn, fb, &p.b)
	for _, h := range []*half{&p.a, &p.b} {
		if err := h.Settle(true); err != nil {
			e.finish(p, false)
			return
		}
	}
}

// Event serves the events of one half.
func (h *half) Event(ev uint32) {
	if !h.p.closed {
		h.p.e.handle(h, ev)
	}
}

// handle serves the events of one half.
func (e *Engine) handle(h *half, events uint32) {
	p := h.p
	if events&evloop.Err != 0 {
		err := rawsys.SockError(h.FD)
		e.finish(p, isReset(err))
		return
	}
	if events&evloop.Out != 0 && h.Pending() {
		if !e.flush(h) {
			return
		}
	}
	// A hang-up is not the end of the data: the socket may still hold
	// bytes to read, so it is handled by reading, and only while reading
	// from this side is wanted.
	drained := events&(evloop.Hup|evloop.RdHup) == 0
	if events&(evloop.In|evloop.Hup|evloop.RdHup) != 0 && h.Mask()&evloop.In != 0 {
		drained = e.read(h) && drained
		if p.closed {
			return
		}
	} else if events&evloop.In != 0 {
		drained = false
	}
	e.update(p)
	if drained && !p.closed {
		e.loop.Drained()
	}
}

// read takes what the socket has (one read: a short read means drained,
// and the level-triggered epoll reports any rest) and writes it on to the
// peer; true when it left the socket empty.
func (e *Engine) read(h *half) (all bool) {
	p := h.p
	n, err := h.Fill(e.buf)
	switch {
	case n > 0:
		p.last = e.loop.Now()
		if h.count != nil {
			h.count(n)
		}
		if err := h.peer.Write(e.buf[:n]); err != nil {
			e.finish(p, true)
		}
		return n < len(e.buf)
	case err == unix.EAGAIN:
		return true
	case err != io.EOF:
		e.finish(p, isReset(err))
	default: // EOF: pass the half-close on once the peer has its bytes
		h.readDone = true
		if !h.peer.Pending() {
			shutWrite(h.peer)
		}
	}
	return false
}

// flush writes pending bytes; false if the pair ended.
func (e *Engine) flush(h *half) bool {
	if err := h.Flush(); err != nil {
		e.finish(h.p, true)
		return false
	}
	h.p.last = e.loop.Now()
	if !h.Pending() && h.peer.readDone {
		shutWrite(h)
	}
	return true
}

func shutWrite(h *half) {
	if !h.shutOut {
		h.shutOut = true
		unix.Shutdown(h.FD, unix.SHUT_WR)
	}
}

// update sets each half's epoll interest from its state and ends the pair
// when both directions are finished.
func (e *Engine) update(p *Pair) {
	if p.closed {
		return
	}
	if p.a.readDone && p.b.readDone && !p.a.Pending() && !p.b.Pending() {
		e.finish(p, false)
		return
	}
	for _, h := range []*half{&p.a, &p.b} {
		if err := h.Settle(!h.readDone && !h.peer.Pending()); err != nil {
			e.finish(p, false)
			return
		}
	}
}

// finish closes both sides of p. reset passes a reset on (RST, not FIN).
func (e *Engine) finish(p *Pair, reset bool) {
	if p.closed {
		return
	}
	p.closed = true
	p.a.Close(reset)
	p.b.Close(reset)
	delete(e.pairs, p)
	close(p.done)
}

// sweep ends pairs idle for longer than their idle timeout.
func (e *Engine) sweep() {
	now := time.Now().UnixNano()
	for p := range e.pairs {
		if p.idle > 0 && now-p.last > p.idle {
			e.finish(p, false)
		}
	}
}
