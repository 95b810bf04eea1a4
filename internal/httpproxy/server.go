package httpproxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server is the HTTP server of one listener. It lives across reloads: a
// reload swaps its Handler, so that even keep-alive connections take the
// new routes on their next request. It implements listener.Handler.
type Server struct {
	srv     *http.Server
	ln      *chanListener
	handler atomic.Pointer[Handler]
}

// NewServer starts a server; idle is the keep-alive idle timeout.
func NewServer(idle time.Duration, log *slog.Logger) *Server {
	s := &Server{ln: &chanListener{conns: make(chan net.Conn), closed: make(chan struct{})}}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.handler.Load().ServeHTTP(w, r) }),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
	}
	// HTTP/1.1 and HTTP/2: h2c in the clear (prior knowledge or upgrade
	// from the app), h2 by ALPN on TLS listeners.
	s.srv.Protocols.SetHTTP1(true)
	s.srv.Protocols.SetHTTP2(true)
	s.srv.Protocols.SetUnencryptedHTTP2(true)
	go s.srv.Serve(s.ln)
	return s
}

// Update swaps the handler for requests from now on.
func (s *Server) Update(h *Handler) { s.handler.Store(h) }

// ServeConn hands c to the HTTP server and returns when it is closed.
func (s *Server) ServeConn(_ context.Context, c net.Conn) {
	tc := &trackedConn{Conn: c, done: make(chan struct{})}
	select {
	case s.ln.conns <- tc:
		<-tc.done
	case <-s.ln.closed:
		c.Close()
	}
}

// Drain asks clients to go: every response from now on carries
// Connection: close and idle HTTP/1.1 connections are closed, while new
// connections are still served (the app may still be finishing).
func (s *Server) Drain() { s.srv.SetKeepAlivesEnabled(false) }

// Close stops the server gracefully: idle connections now, active ones
// when their request ends (or at the deadline).
func (s *Server) Close(deadline time.Duration) {
	s.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	s.srv.Shutdown(ctx)
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
