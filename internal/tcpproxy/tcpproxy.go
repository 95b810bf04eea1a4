// Package tcpproxy pumps bytes between an application connection and an
// upstream endpoint: both directions at once, half-close passed through,
// an idle timeout shared by both directions, and resets passed on as resets.
package tcpproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/evloop"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Counters receive byte counts as they flow. Any field may be nil.
type Counters struct {
	ToUpstream   func(n int)
	FromUpstream func(n int)
}

// Handler proxies each connection to an endpoint of Cluster. It is safe for
// concurrent use; a reload replaces the Handler of a listener, and
// connections already open keep the one they started with.
type Handler struct {
	Cluster     *upstream.Cluster
	IdleTimeout time.Duration
	Counters    Counters
	Log         *slog.Logger
	// Engines carry plain TCP pairs (see Engine); TLS pairs use Pipe, and
	// so does every pair on the portable path: Engines made from a nil
	// evloop.Group (nil), or a platform without epoll.
	Engines *Engines
}

// Engines spreads pairs over one Engine per loop of the process's
// evloop.Group, joined when the first pair comes. It is shared by every
// tcp listener of the process.
type Engines struct {
	g    *evloop.Group
	once sync.Once
	all  []*Engine
	next atomic.Uint32
}

// NewEngines returns the engines on g's loops; nil for a nil g, the
// portable path (Pipe). Every protocol takes its loops this one way (see
// docs/architecture.md).
func NewEngines(g *evloop.Group) *Engines {
	if g == nil {
		return nil
	}
	return &Engines{g: g}
}

// pick returns the engine for the next pair; nil where there is none.
func (es *Engines) pick() *Engine {
	es.once.Do(func() {
		for _, l := range es.g.Loops() {
			es.all = append(es.all, NewEngine(l))
		}
	})
	if len(es.all) == 0 {
		return nil
	}
	return es.all[int(es.next.Add(1))%len(es.all)]
}

// Close ends every pair and takes the engines off their loops.
func (es *Engines) Close() {
	if es == nil {
		return
	}
	es.once.Do(func() {}) // none to start any more
	for _, e := range es.all {
		e.Close()
	}
}

// ServeConn proxies client until either side closes. It closes client.
func (h *Handler) ServeConn(ctx context.Context, client net.Conn) {
	defer client.Close()
	key := balance.HashString(hostOf(client.RemoteAddr()))
	up, ep, err := h.Cluster.Dial(ctx, key)
	if err != nil {
		h.Log.Warn("no upstream for connection", "cluster", h.Cluster.Name(), "client", client.RemoteAddr().String(), "error", err)
		abort(client)
		return
	}
	h.Log.Debug("proxying", "cluster", h.Cluster.Name(), "client", client.RemoteAddr().String(), "endpoint", ep.Addr)
	if h.Engines != nil && isTCP(client) && isTCP(up) {
		if e := h.Engines.pick(); e != nil {
			if p, err := e.Add(client, up, h.IdleTimeout, h.Counters); err == nil {
				untrack := ep.Track(p)
				<-p.Done()
				untrack()
				return
			}
		}
	}
	defer up.Close()
	defer ep.Track(up)()
	Pipe(client, up, h.IdleTimeout, h.Counters)
}

func isTCP(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// bufSize is the copy buffer per direction: HAProxy's default bufsize.
const bufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Pipe copies client→up and up→client until both directions end, then
// returns; the caller closes both. A clean EOF in one direction is passed on
// as a half-close (CloseWrite) and the other direction keeps flowing. An
// error in either direction (reset, failed write, idle timeout) ends both;
// a reset is passed to the other side as a reset. idle > 0 ends the
// connection when neither direction has moved a byte for that long.
func Pipe(client, up net.Conn, idle time.Duration, cnt Counters) {
	p := &pipe{idle: idle}
	p.last.Store(time.Now().UnixNano())
	if idle > 0 {
		dl := time.Now().Add(idle)
		client.SetReadDeadline(dl)
		up.SetReadDeadline(dl)
	}
	done := make(chan struct{})
	go func() {
		if err := p.copy(up, client, cnt.ToUpstream); err != nil {
			p.abort(client, up, err)
		}
		close(done)
	}()
	if err := p.copy(client, up, cnt.FromUpstream); err != nil {
		p.abort(client, up, err)
	}
	<-done
}

type pipe struct {
	idle    time.Duration
	last    atomic.Int64 // unix nanoseconds of the last byte read either way
	aborted atomic.Bool
}

// copy moves bytes from src to dst. On a clean EOF it half-closes dst and
// returns nil; otherwise it returns the error that stopped it.
func (p *pipe) copy(dst, src net.Conn, count func(int)) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.last.Store(time.Now().UnixNano())
			if count != nil {
				count(n)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && p.idle > 0 && !p.aborted.Load() {
			// The deadline is shared idleness: extend it if the other
			// direction moved bytes since.
			if last := time.Unix(0, p.last.Load()); time.Since(last) < p.idle {
				src.SetReadDeadline(last.Add(p.idle))
				continue
			}
		}
		if errors.Is(err, io.EOF) {
			closeWrite(dst)
			return nil
		}
		return err
	}
}

// abort ends both directions after err stopped one of them. A reset on
// either side is passed to the other as a reset (RST rather than FIN), so
// that the far end does not take a broken stream for a complete one.
func (p *pipe) abort(a, b net.Conn, err error) {
	p.aborted.Store(true)
	if isReset(err) {
		setLinger0(a)
		setLinger0(b)
	}
	// Wake the other direction wherever it blocks: a deadline in the past
	// makes its Read or Write return.
	a.SetDeadline(time.Unix(1, 0))
	b.SetDeadline(time.Unix(1, 0))
}

func setLinger0(c net.Conn) {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// abort closes c with a reset, telling the client at once that nothing is
// behind this connection.
func abort(c net.Conn) {
	setLinger0(c)
	c.Close()
}
