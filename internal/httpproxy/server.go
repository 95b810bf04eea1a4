package httpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/attache-proxy/attache/internal/evloop"
)

// Server is the HTTP server of one listener. It lives across reloads: a
// reload swaps its Handler, so that even keep-alive connections take the
// new routes on their next request. It implements listener.Handler.
//
// Cleartext connections start in the event-loop engine (on Linux, with
// ServerOptions.Loops), which serves plain HTTP/1.1 requests with Content-Length or no
// bodies and hands the connection, at a request boundary and with what it
// read, to the goroutine fast path (fastConn) for anything else. The fast
// path serves the rest of plain HTTP/1.1, and HTTP/1.x over TLS, and hands
// the connection in turn to the net/http server for upgrades and routes to
// TLS or HTTP/2 upstreams, checking every head first. HTTP/2 (h2c, and h2
// by ALPN) goes to net/http. What net/http is given depends on how the
// connection begins (see handOff).
type Server struct {
	srv     *http.Server
	ln      *chanListener
	handler atomic.Pointer[Handler]
	idle    time.Duration
	fast    bool
	eng     *engines // nil: the goroutine fast path serves

	// headerTimeout bounds the arrival of a request head, from the accept
	// for the first one (net/http's ReadHeaderTimeout), on every path and
	// across hand-offs: readHeaderTimeout.
	headerTimeout time.Duration

	draining atomic.Bool
	closing  atomic.Bool
	mu       sync.Mutex
	conns    map[*fastConn]struct{}
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// IdleTimeout closes a keep-alive connection idle that long (0: never).
	IdleTimeout time.Duration
	// Loops are the event loops the engine serves cleartext HTTP/1.1 on:
	// the process's evloop.Group. nil, or a platform without epoll: the
	// portable path, the goroutine fast path for every connection. Every
	// protocol takes its loops this one way (see docs/architecture.md).
	Loops *evloop.Group
	// NetHTTP serves every connection with net/http's server, as TLS
	// upstreams, HTTP/2 and upgrades always are: attache's escape hatch
	// from its own HTTP/1.1 wire code (ATTACHE_HTTP_FAST_PATH=off).
	NetHTTP bool
	Log     *slog.Logger
}

// NewServer starts a server.
func NewServer(o ServerOptions) *Server {
	log, idle := o.Log, o.IdleTimeout
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{ln: &chanListener{conns: make(chan net.Conn), closed: make(chan struct{})}, idle: idle, fast: !o.NetHTTP,
		headerTimeout: readHeaderTimeout, conns: map[*fastConn]struct{}{}}
	if !o.NetHTTP {
		s.eng = newEngines(s, o.Loops, log)
	}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil { // net/http sees TLS connections as cleartext (see handOff)
				r.TLS, _ = r.Context().Value(tlsStateKey{}).(*tls.ConnectionState)
			}
			dropH2CUpgrade(r.Header)
			s.handler.Load().ServeHTTP(w, r)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*trackedConn); ok && tc.tls != nil {
				return context.WithValue(ctx, tlsStateKey{}, tc.tls)
			}
			return ctx
		},
		ReadHeaderTimeout: s.headerTimeout,
		IdleTimeout:       idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
		HTTP2:             &http.HTTP2Config{MaxReadFrameSize: h2MaxFrameSize, MaxDecoderHeaderTableSize: h2HeaderTableSize},
	}
	// HTTP/1.1 and HTTP/2: h2c in the clear (prior knowledge), h2 by ALPN
	// on TLS listeners; both reach net/http as unencrypted HTTP/2.
	s.srv.Protocols.SetHTTP1(true)
	s.srv.Protocols.SetHTTP2(true)
	s.srv.Protocols.SetUnencryptedHTTP2(true)
	go s.srv.Serve(s.ln)
	return s
}

// Update swaps the handler for requests from now on.
func (s *Server) Update(h *Handler) { s.handler.Store(h) }

// ServeConn serves c and returns when it is closed. HTTP/1.x over TLS
// (ALPN "http/1.1" or none) takes the goroutine fast path as cleartext
// does, so that every head is checked before anything is forwarded or
// handed off; h2 goes to net/http (handOff). The engine serves no TLS.
func (s *Server) ServeConn(_ context.Context, c net.Conn) {
	headStart := time.Now() // the accept: the first head is due from now
	tc, isTLS := c.(*tls.Conn)
	if isTLS && !handshake(tc, headStart.Add(s.headerTimeout)) {
		c.Close()
		return
	}
	if !s.fast || isTLS && tc.ConnectionState().NegotiatedProtocol == "h2" {
		s.handOff(c, bufio.NewReader(c), nil, headStart.Add(s.headerTimeout))
		return
	}
	var pre []byte
	if s.eng != nil && !isTLS {
		var served bool
		var engineHead time.Time
		if c, pre, engineHead, served = s.eng.serve(c); served && c == nil {
			return // closed by the engine
		}
		// c was not for the engine, or the engine handed it over at a
		// request boundary with what it had read, and the head pending in
		// that keeps the deadline it had.
		if served {
			headStart = engineHead
		}
	}
	fc := newFastConn(s, c, pre, headStart)
	if isTLS {
		fc.proto = "https"
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[fc] = struct{}{}
	s.mu.Unlock()
	handedOff := fc.serve()
	s.mu.Lock()
	delete(s.conns, fc)
	s.mu.Unlock()
	if !handedOff {
		c.Close()
		return
	}
	var due time.Time // the pending head's deadline
	if !fc.headStart.IsZero() {
		due = fc.headStart.Add(s.headerTimeout)
	}
	s.handOff(c, fc.br, fc.large, due)
}

// handshake completes the TLS handshake of c (done already where the
// listener ran it) by due, the first head's deadline, and reports whether
// it succeeded.
func handshake(c *tls.Conn, due time.Time) bool {
	c.SetDeadline(due)
	err := c.Handshake()
	c.SetDeadline(time.Time{})
	return err == nil
}

// dropH2CUpgrade takes an upgrade to h2c (deprecated by RFC 9113 3.1) out
// of a request's headers, with HTTP2-Settings, so that it is served as it
// came. Passed on, it would let a backend that switches protocols carry
// the app's HTTP/2 past attache's routes and filters (h2c smuggling).
func dropH2CUpgrade(h http.Header) {
	if !httpguts.HeaderValuesContainsToken(h["Upgrade"], "h2c") {
		return
	}
	var keep []string
	for _, v := range h["Upgrade"] {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" && !strings.EqualFold(t, "h2c") {
				keep = append(keep, t)
			}
		}
	}
	h.Del("Http2-Settings")
	if h.Del("Upgrade"); len(keep) > 0 {
		h.Set("Upgrade", strings.Join(keep, ", "))
	}
}

// tlsStateKey is the context key of a TLS connection's state.
type tlsStateKey struct{}

// handOff gives c, whose bytes from here on are pre and then what br
// reads, to the net/http server and waits until it is closed; the head
// pending in them is due by due (zero: none pending). How c begins decides
// what net/http gets (see readGreeting): HTTP/2 through the frame filter
// h2Conn, HTTP/1 as it came; a connection that speaks neither, or over TLS
// not what ALPN chose, or h2 over TLS too weak for it, is closed without
// an answer. pre is a whole HTTP/1 head the fast path read and checked. A
// TLS connection is given as cleartext so that the filter can sit under
// net/http's HTTP/2 server (which takes only a *tls.Conn as TLS); its
// state reaches requests through the connection's context.
func (s *Server) handOff(c net.Conn, br *bufio.Reader, pre []byte, due time.Time) {
	g, err := greetHTTP1, error(nil)
	if len(pre) == 0 {
		if due.IsZero() {
			c.SetReadDeadline(time.Now().Add(s.headerTimeout))
		} else {
			c.SetReadDeadline(due)
		}
		g, err = readGreeting(br)
	}
	c.SetReadDeadline(time.Time{}) // net/http keeps its own, held to due
	var state *tls.ConnectionState
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		state = &st
		if (st.NegotiatedProtocol == "h2") != (g == greetHTTP2) || g == greetHTTP2 && !h2Secure(&st) {
			g = greetOther
		}
	}
	var hc net.Conn = &prereadConn{Conn: c, pre: pre, br: br, headDeadline: due}
	switch {
	case err != nil || g == greetOther:
		c.Close()
		return
	case g == greetHTTP2:
		hc = newH2Conn(c, br)
	}
	tc := &trackedConn{Conn: hc, tls: state, done: make(chan struct{})}
	select {
	case s.ln.conns <- tc:
		<-tc.done
	case <-s.ln.closed:
		c.Close()
	}
}

// prereadConn is a connection whose first bytes were read into pre and
// then br, and whose pending head, if any, is due by headDeadline.
type prereadConn struct {
	net.Conn
	pre          []byte
	br           *bufio.Reader
	headDeadline time.Time // zero: none
}

// SetReadDeadline keeps the deadline of the head pending at the hand-off:
// net/http's first call (its read-header deadline for that head) is held
// to headDeadline, so that a slow head does not get its timeout twice.
func (c *prereadConn) SetReadDeadline(t time.Time) error {
	if d := c.headDeadline; !d.IsZero() {
		c.headDeadline = time.Time{}
		if t.IsZero() || t.After(d) {
			t = d
		}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *prereadConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	if c.br != nil && c.br.Buffered() > 0 {
		return c.br.Read(p)
	}
	c.br = nil
	return c.Conn.Read(p)
}

// Drain asks clients to go: every response from now on carries
// Connection: close and idle HTTP/1.1 connections are closed, while new
// connections are still served (the app may still be finishing).
func (s *Server) Drain() {
	s.draining.Store(true)
	s.srv.SetKeepAlivesEnabled(false)
	s.closeIdle()
}

// closeIdle closes the fast connections waiting between requests, and
// when the server is closing those that never sent one.
func (s *Server) closeIdle() (open int) {
	if s.eng != nil {
		open += s.eng.closeIdle(s.closing.Load())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for fc := range s.conns {
		if fc.state.CompareAndSwap(connIdle, connClosed) || s.closing.Load() && fc.state.CompareAndSwap(connNew, connClosed) {
			fc.c.Close()
		}
	}
	return open + len(s.conns)
}

// Close stops the server gracefully: idle connections now, active ones
// when their request ends (or at the deadline).
func (s *Server) Close(deadline time.Duration) {
	s.draining.Store(true)
	s.closing.Store(true)
	s.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	done := make(chan struct{})
	go func() { s.srv.Shutdown(ctx); close(done) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.closeIdle() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			s.mu.Lock()
			for fc := range s.conns {
				fc.c.Close()
			}
			s.mu.Unlock()
		}
		if ctx.Err() != nil {
			break
		}
	}
	if s.eng != nil {
		s.eng.stop() // what is left closes
	}
	<-done
}

// chanListener is the net.Listener of a Server's http.Server: the
// connections come from attache's own listener.
type chanListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// trackedConn closes done when the HTTP server closes the connection.
type trackedConn struct {
	net.Conn
	tls  *tls.ConnectionState // nil: cleartext
	once sync.Once
	done chan struct{}
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
