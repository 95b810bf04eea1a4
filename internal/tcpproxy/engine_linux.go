package tcpproxy

import (
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/rawsys"
)

// Engine pumps plain TCP connection pairs on one goroutine over a
// level-triggered epoll set, the way HAProxy does, instead of two goroutines
// per connection blocked in Read.
//
// Why: on loopback the cost of a proxy is syscalls and wake-ups. A goroutine
// pump reads until EAGAIN (Go's netpoller is edge-triggered, so every
// message costs a read that fails) and parks after every message; here a
// read happens only when epoll says the socket is readable, a short read is
// taken as drained, and one epoll_wait serves every ready connection. That is
// four syscalls per request/response instead of six. See
// docs/tcp-fast-path.md for the measurements.
//
// The loop itself is an evloop.Loop. Only plain TCP goes through an engine: TLS needs crypto/tls and uses Pipe.
// A pair's file descriptors are duplicated from the net.Conns, which are
// then closed, so Go's poller no longer watches them.
type Engine struct {
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
	src      *evloop.Source
	fd       int
	p        *Pair
	peer     *half
	count    func(int)
	out      []byte // bytes waiting to be written to fd
	readDone bool   // EOF read from fd
	shutOut  bool   // SHUT_WR sent to fd
}

// sweepEvery is how often idle pairs are looked for.
const sweepEvery = time.Second

// NewEngine starts an engine goroutine.
func NewEngine() (*Engine, error) {
	e := &Engine{pairs: map[*Pair]struct{}{}, buf: make([]byte, 64<<10)}
	loop, err := evloop.New(sweepEvery, e.sweep, nil, e.closeAll)
	if err != nil {
		return nil, err
	}
	e.loop = loop
	loop.Start()
	return e, nil
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
	p.a = half{fd: fa, p: p, count: cnt.ToUpstream}
	p.b = half{fd: fb, p: p, count: cnt.FromUpstream}
	p.a.peer, p.b.peer = &p.b, &p.a
	if !e.loop.Do(func() { e.register(p) }) {
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
	p.e.loop.Do(func() { p.e.finish(p, false) })
	return nil
}

// Close ends every pair and stops the engine.
func (e *Engine) Close() { e.loop.Stop() }

// closeAll ends every pair, as the loop stops.
func (e *Engine) closeAll() {
	for p := range e.pairs {
		e.finish(p, false)
	}
}

func (e *Engine) register(p *Pair) {
	p.last = e.loop.Now()
	if p.last == 0 {
		p.last = time.Now().UnixNano()
	}
	e.pairs[p] = struct{}{}
	for _, h := range []*half{&p.a, &p.b} {
		h.src = e.loop.Add(h.fd, evloop.HandlerFunc(func(ev uint32) {
			if !h.p.closed {
				e.handle(h, ev)
			}
		}))
		if err := h.src.Want(evloop.In | evloop.RdHup); err != nil {
			e.finish(p, false)
			return
		}
	}
}

// handle serves the events of one half.
func (e *Engine) handle(h *half, events uint32) {
	p := h.p
	if events&unix.EPOLLERR != 0 {
		err := rawsys.SockError(h.fd)
		e.finish(p, isReset(err))
		return
	}
	if events&unix.EPOLLOUT != 0 && len(h.out) > 0 {
		if !e.flush(h) {
			return
		}
	}
	// A hang-up is not the end of the data: the socket may still hold
	// bytes to read, so it is handled by reading, and only while reading
	// from this side is wanted.
	drained := events&(unix.EPOLLHUP|unix.EPOLLRDHUP) == 0
	if events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 && h.src.Mask()&unix.EPOLLIN != 0 {
		drained = e.read(h) && drained
		if p.closed {
			return
		}
	} else if events&unix.EPOLLIN != 0 {
		drained = false
	}
	e.update(p)
	if drained && !p.closed {
		e.loop.Drained()
	}
}

// read takes what fd has (one read: a short read means drained, and the
// level-triggered epoll reports any rest) and writes it on to the peer;
// true when it left the socket empty.
func (e *Engine) read(h *half) (all bool) {
	p := h.p
	n, err := rawsys.Recv(h.fd, e.buf)
	switch {
	case n > 0:
		p.last = e.loop.Now()
		if h.count != nil {
			h.count(n)
		}
		e.write(h.peer, e.buf[:n])
		return n < len(e.buf)
	case err == unix.EAGAIN:
		return true
	case err == unix.EINTR:
	case err != nil:
		e.finish(p, isReset(err))
	default: // EOF: pass the half-close on once the peer has its bytes
		h.readDone = true
		if len(h.peer.out) == 0 {
			shutWrite(h.peer)
		}
	}
	return false
}

// write sends b to h, keeping what the socket does not take for EPOLLOUT.
func (e *Engine) write(h *half, b []byte) {
	switch n, err := rawsys.SendAll(h.fd, b); err {
	case nil:
	case unix.EAGAIN:
		h.out = append(h.out[:0:0], b[n:]...)
	default:
		e.finish(h.p, true)
	}
}

// flush writes pending bytes; false if the pair ended.
func (e *Engine) flush(h *half) bool {
	n, err := rawsys.SendAll(h.fd, h.out)
	if n > 0 {
		h.out = h.out[n:]
		h.p.last = e.loop.Now()
	}
	switch err {
	case nil:
	case unix.EAGAIN:
		return true
	default:
		e.finish(h.p, true)
		return false
	}
	h.out = nil
	if h.peer.readDone {
		shutWrite(h)
	}
	return true
}

func shutWrite(h *half) {
	if !h.shutOut {
		h.shutOut = true
		unix.Shutdown(h.fd, unix.SHUT_WR)
	}
}

// update sets each half's epoll interest from its state and ends the pair
// when both directions are finished.
func (e *Engine) update(p *Pair) {
	if p.closed {
		return
	}
	if p.a.readDone && p.b.readDone && len(p.a.out) == 0 && len(p.b.out) == 0 {
		e.finish(p, false)
		return
	}
	for _, h := range []*half{&p.a, &p.b} {
		var m uint32
		if !h.readDone && len(h.peer.out) == 0 {
			m |= unix.EPOLLIN | unix.EPOLLRDHUP
		}
		if len(h.out) > 0 {
			m |= unix.EPOLLOUT
		}
		if err := h.src.Want(m); err != nil {
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
	for _, h := range []*half{&p.a, &p.b} {
		if h.src != nil {
			h.src.Close(reset)
		} else {
			unix.Close(h.fd)
		}
	}
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

// The data path uses raw system calls: the sockets are non-blocking, so a
// call never blocks, and skipping the scheduler's syscall bookkeeping keeps
// sysmon from handing the processor to another thread whenever a loopback
// write runs long (a futex wake and a context switch each time). recvfrom
// and sendto rather than read and write: on a socket they skip the file
// position lock.
