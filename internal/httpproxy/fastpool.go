package httpproxy

import (
	"bufio"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/rawsys"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Buffer sizes of the fast path's upstream connections: a response head
// must fit the read buffer.
const (
	upReadBuf  = 32 << 10
	upWriteBuf = 4 << 10
)

// idleBudget counts the idle connections to one endpoint of a cluster
// over every listener and wire path: the goroutine fast path's connPool,
// the engine's pools (one per loop and Server) and net/http's Transport
// (idleConn) take a place before they keep a connection idle and give it
// back when it leaves the pool, so that max_idle_per_endpoint bounds
// them all together. Safe for concurrent use.
type idleBudget struct {
	n   atomic.Int64
	max int64
}

// take reserves a place for one more idle connection; false: the
// endpoint has max_idle_per_endpoint already (close the connection).
func (b *idleBudget) take() bool {
	if b.n.Add(1) > b.max {
		b.n.Add(-1)
		return false
	}
	return true
}

// give returns a place that take reserved.
func (b *idleBudget) give() { b.n.Add(-1) }

// connPool is the fast path's keep-alive pool for one cleartext HTTP/1.1
// endpoint: a stack of idle connections, newest on top (the oldest, most
// likely closed by the server's idle timeout, age out at the bottom). Its
// budget is the endpoint's, shared with the other paths.
type connPool struct {
	ep     *upstream.Endpoint
	up     *upstream.Cluster
	budget *idleBudget
	idle   time.Duration
	dialer net.Dialer

	mu     sync.Mutex
	conns  []*upConn
	closed bool
}

// upConn is one upstream connection with its buffers.
type upConn struct {
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	idleFrom time.Time
	deadline lazyDeadline
}

// deadlineSlack is how much earlier than asked an upstream connection's
// deadline may fire.
const deadlineSlack = 10 * time.Millisecond

// lazyDeadline is a connection deadline as last set: a new one within slack
// after it is left as it is, which spares resetting the runtime's timer on
// every request (it showed in profiles). A later zero clears it.
type lazyDeadline struct{ at time.Time }

func (l *lazyDeadline) set(d time.Time, slack time.Duration, apply func(time.Time) error) {
	if d.IsZero() {
		if !l.at.IsZero() {
			apply(d)
			l.at = d
		}
		return
	}
	if l.at.IsZero() || l.at.After(d) || l.at.Before(d.Add(-slack)) {
		apply(d)
		l.at = d
	}
}

// setDeadline sets c's deadline to d (zero: none), or leaves one that is at
// most deadlineSlack earlier.
func (uc *upConn) setDeadline(d time.Time) { uc.deadline.set(d, deadlineSlack, uc.c.SetDeadline) }

// get returns an idle connection (reused true) or dials a new one, by
// deadline at the latest; now is about the current time. once: the
// request must not run twice, so an idle connection the upstream has
// already closed is not taken (checked, at the cost of a read).
func (p *connPool) get(now, deadline time.Time, once bool) (uc *upConn, reused bool, err error) {
	p.mu.Lock()
	for len(p.conns) > 0 {
		uc = p.conns[len(p.conns)-1]
		p.conns[len(p.conns)-1] = nil
		p.conns = p.conns[:len(p.conns)-1]
		p.budget.give()
		if p.idle > 0 && now.Sub(uc.idleFrom) > p.idle {
			uc.c.Close()
			continue
		}
		p.mu.Unlock()
		if once && uc.peerClosed() {
			uc.c.Close()
			p.mu.Lock()
			continue
		}
		return uc, true, nil
	}
	p.mu.Unlock()
	d := p.dialer
	if !deadline.IsZero() && (d.Timeout <= 0 || deadline.Before(now.Add(d.Timeout))) {
		d.Deadline = deadline
	}
	c, err := d.DialContext(context.Background(), "tcp", p.ep.Addr)
	p.up.RecordConnect(p.ep, err)
	if err != nil {
		return nil, false, &connectError{err}
	}
	return &upConn{c: c, br: bufio.NewReaderSize(rawsys.NewReader(c), upReadBuf), bw: bufio.NewWriterSize(rawsys.NewWriter(c), upWriteBuf)}, false, nil
}

// peerClosed reports whether the upstream closed an idle connection, or
// sent on it what nobody asked: a read that may not wait finds anything
// but nothing. The read deadline is then what it was.
func (uc *upConn) peerClosed() bool {
	if uc.br.Buffered() > 0 {
		return true
	}
	uc.c.SetReadDeadline(time.Now())
	_, err := uc.br.Peek(1)
	uc.c.SetReadDeadline(uc.deadline.at)
	return !isTimeout(err)
}

// put returns a connection whose exchange ended cleanly at now.
func (p *connPool) put(uc *upConn, now time.Time) {
	p.mu.Lock()
	if p.closed || !p.budget.take() {
		p.mu.Unlock()
		uc.c.Close()
		return
	}
	uc.idleFrom = now
	p.conns = append(p.conns, uc)
	p.mu.Unlock()
}

func (p *connPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, uc := range p.conns {
		uc.c.Close()
		p.budget.give()
	}
	p.conns = nil
}
