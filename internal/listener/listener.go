// Package listener owns the sockets the application connects to. A Pool
// keeps them by address across reloads: a listener whose address stays gets
// its new settings (handler, TLS, limits) swapped in atomically and keeps
// both its socket and its open connections; only a listener whose address
// goes away stops accepting.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Handler serves one accepted connection and closes it when done.
type Handler interface {
	ServeConn(ctx context.Context, c net.Conn)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c net.Conn)

// ServeConn calls f.
func (f HandlerFunc) ServeConn(ctx context.Context, c net.Conn) { f(ctx, c) }

// Events receive per-listener events for metrics. Any field may be nil.
type Events struct {
	Accepted     func()
	Closed       func()
	Rejected     func(reason string)
	HandshakeErr func(err error)
}

// Settings are what a listener does with the connections it accepts.
type Settings struct {
	Name           string
	Handler        Handler
	TLS            *tls.Config // nil: plain TCP
	MaxConnections int
	Events         Events
}

// HandshakeTimeout bounds a client's TLS handshake.
const HandshakeTimeout = 10 * time.Second

// Pool is the set of open listeners. Its methods are safe for concurrent
// use.
type Pool struct {
	log    *slog.Logger
	ctx    context.Context // passed to handlers; ends at Close
	cancel context.CancelFunc

	mu     sync.Mutex
	byAddr map[string]*Listener
	active atomic.Int64 // open connections across all listeners
}

// NewPool returns an empty pool.
func NewPool(log *slog.Logger) *Pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{log: log, ctx: ctx, cancel: cancel, byAddr: map[string]*Listener{}}
}

// Listener is one open socket and its current settings.
type Listener struct {
	pool     *Pool
	ln       net.Listener
	settings atomic.Pointer[Settings]
	active   atomic.Int64
}

// Addr returns the bound address (useful with port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Active returns the connections open on this listener.
func (l *Listener) Active() int64 { return l.active.Load() }

// Apply makes the pool serve exactly the given listeners, keyed by address.
// It is a transaction: every new address is bound first, and if any fails,
// those just bound are closed and nothing else changes. Then settings are
// swapped on kept listeners, new ones start accepting, and listeners whose
// address is gone stop accepting (their open connections go on).
func (p *Pool) Apply(set map[string]Settings) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	opened := map[string]*Listener{}
	for addr := range set {
		if _, ok := p.byAddr[addr]; ok {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range opened {
				l.ln.Close()
			}
			return fmt.Errorf("listen on %s for listener %q: %w", addr, set[addr].Name, err)
		}
		opened[addr] = &Listener{pool: p, ln: ln}
	}
	for addr, l := range p.byAddr {
		if _, keep := set[addr]; !keep {
			l.ln.Close()
			delete(p.byAddr, addr)
		}
	}
	for addr, s := range set {
		s := s
		if l, ok := p.byAddr[addr]; ok {
			l.settings.Store(&s)
			continue
		}
		l := opened[addr]
		l.settings.Store(&s)
		p.byAddr[addr] = l
		go l.serve()
	}
	return nil
}

// Get returns the listener on addr, or nil.
func (p *Pool) Get(addr string) *Listener {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byAddr[addr]
}

// Active returns the connections open across all listeners.
func (p *Pool) Active() int64 { return p.active.Load() }

// Close stops accepting on every listener and cancels the context handed to
// handlers. Open connections are not closed here.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, l := range p.byAddr {
		l.ln.Close()
		delete(p.byAddr, addr)
	}
	p.cancel()
}

func (l *Listener) serve() {
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as
			// net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.pool.log.Error("accept failed", "address", l.ln.Addr().String(), "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s := l.settings.Load()
		if l.active.Load() >= int64(s.MaxConnections) {
			// Refuse at once rather than leave the client waiting in the
			// backlog: the application sees the limit and can back off.
			if s.Events.Rejected != nil {
				s.Events.Rejected("max_connections")
			}
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
			continue
		}
		l.active.Add(1)
		l.pool.active.Add(1)
		if s.Events.Accepted != nil {
			s.Events.Accepted()
		}
		go l.handle(c, s)
	}
}

func (l *Listener) handle(c net.Conn, s *Settings) {
	defer func() {
		l.active.Add(-1)
		l.pool.active.Add(-1)
		if s.Events.Closed != nil {
			s.Events.Closed()
		}
	}()
	if s.TLS != nil {
		tc := tls.Server(c, s.TLS)
		ctx, cancel := context.WithTimeout(l.pool.ctx, HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.pool.log.Debug("client TLS handshake failed", "listener", s.Name, "client", c.RemoteAddr().String(), "error", err)
			if s.Events.HandshakeErr != nil {
				s.Events.HandshakeErr(err)
			}
			c.Close()
			return
		}
		c = tc
	}
	s.Handler.ServeConn(l.pool.ctx, c)
}
