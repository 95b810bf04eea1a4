package redisproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/resp"
	"github.com/attache-proxy/attache/internal/upstream"
)

// request is one command on its way to a shard; done is closed when reply
// (or err) is set.
type request struct {
	raw   []byte
	reply []byte
	err   error
	start time.Time
	done  chan struct{}
	again bool // read-only: may be sent once more (part.again)
	sent  bool // was on a connection that closed before its reply
}

func newRequest(raw []byte, again bool) *request {
	return &request{raw: raw, start: time.Now(), done: make(chan struct{}), again: again}
}

func (r *request) finish(reply []byte, err error) {
	r.reply, r.err = reply, err
	close(r.done)
}

// serverConn multiplexes the requests of many clients over one connection
// to a shard: a writer goroutine batches queued requests into one write,
// and a reader goroutine matches replies to requests in order.
type serverConn struct {
	s       *server
	mu      sync.Mutex
	in      chan *request // nil until started
	pending chan *request
	conn    net.Conn // the connection open, for close
	// closed: the pool is closed or the shard left the cluster (closeErr
	// says which); no request is taken
	closed   bool
	closeErr error
}

// close closes the connection and refuses requests from now on with err;
// what is in flight fails.
func (sc *serverConn) close(err error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.closed, sc.closeErr = true, err
	if sc.conn != nil {
		sc.conn.Close()
	}
}

// maxInFlight bounds the requests queued on one server connection.
const maxInFlight = 4096

// send queues r. The push happens under sc.mu and never blocks, so that a
// connection that fails (and, under the same lock, stops taking requests)
// cannot strand a request in its queue: everything pushed before is
// drained and failed, everything after goes to a new connection.
func (sc *serverConn) send(r *request) {
	sc.mu.Lock()
	if sc.closed {
		err := sc.closeErr
		sc.mu.Unlock()
		if err == errRemoved {
			err = fmt.Errorf("shard %s (%s): %w", sc.s.name, sc.s.addr, err)
		}
		r.finish(nil, err)
		return
	}
	if sc.in == nil {
		in, pending := make(chan *request, maxInFlight), make(chan *request, maxInFlight)
		sc.in, sc.pending = in, pending
		sc.s.runs.Add(1)
		go func() {
			defer sc.s.runs.Done()
			sc.run(in, pending)
		}()
	}
	select {
	case sc.in <- r:
		sc.mu.Unlock()
	default:
		sc.mu.Unlock()
		r.finish(nil, fmt.Errorf("shard %s (%s): more than %d commands in flight", sc.s.name, sc.s.addr, maxInFlight))
	}
}

// run owns the connection: it dials on the first request (again while the
// shard refuses, within its redial window: nothing has been sent), serves
// until the connection fails, and then dials again while there is work:
// the read-only requests that were in flight on a connection the shard
// closed go first, once; every other request in flight fails (a write may
// have run: it is never sent twice). It stops when nothing is queued, so
// that the next request starts it again.
func (sc *serverConn) run(in, pending chan *request) {
	s := sc.s
	var again []*request
	for {
		conn, err := s.connect()
		if err == nil {
			err = sc.adopt(conn)
		}
		if err != nil {
			sc.fail(in, again, err)
			return
		}
		again = sc.serve(conn, in, pending, again)
		if !sc.more(in, again) {
			return
		}
	}
}

// adopt makes conn the connection that close closes; an error if the pool
// closed meanwhile.
func (sc *serverConn) adopt(conn net.Conn) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed {
		conn.Close()
		return sc.closeErr
	}
	sc.conn = conn
	return nil
}

// more reports whether run has work for another connection; if not, the
// next request starts a new run (the check and the reset are under sc.mu,
// where send pushes).
func (sc *serverConn) more(in chan *request, again []*request) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed || len(again) > 0 || len(in) > 0 {
		return true // closed: the next connect fails them
	}
	if sc.in == in {
		sc.in = nil
	}
	return false
}

// fail fails the requests to resend and everything queued, and stops
// taking requests on in.
func (sc *serverConn) fail(in chan *request, again []*request, err error) {
	s := sc.s
	sc.mu.Lock()
	if sc.in == in {
		sc.in = nil
	}
	closed, closeErr := sc.closed, sc.closeErr
	sc.mu.Unlock()
	if closed {
		err = closeErr // not the shard's failure
	} else {
		s.failed(err)
	}
	msg := fmt.Errorf("shard %s (%s): %w", s.name, s.addr, err)
	for _, r := range again {
		r.finish(nil, msg)
	}
	for {
		select {
		case r := <-in:
			r.finish(nil, msg)
		default:
			return
		}
	}
}

// serve writes the requests to resend and then what in brings on conn,
// and a reader goroutine matches the replies, until conn fails. It
// returns the requests to send again on a new connection: those read-only
// requests in flight that had not been sent before, when the shard closed
// the connection (not on a timeout, where resending would double the
// wait). The other requests in flight fail.
func (sc *serverConn) serve(conn net.Conn, in, pending chan *request, again []*request) []*request {
	s := sc.s
	s.connUp()
	defer s.connDown()
	defer conn.Close()
	readerDone := make(chan error, 1)
	var outstanding atomic.Int64
	go func() {
		rd := resp.NewReader(conn)
		for {
			raw, err := rd.ReadReply()
			if err != nil {
				readerDone <- err
				return
			}
			r := <-pending
			s.ok()
			r.finish(append([]byte(nil), raw...), nil)
			if outstanding.Add(-1) == 0 {
				conn.SetReadDeadline(time.Time{})
			} else if s.timeout > 0 {
				conn.SetReadDeadline(time.Now().Add(s.timeout))
			}
		}
	}()
	bw := bufio.NewWriterSize(conn, 16<<10)
	write := func(r *request) {
		bw.Write(r.raw)
		pending <- r
	}
	var err error
	for _, r := range again {
		write(r)
	}
	if n := len(again); n > 0 {
		outstanding.Add(int64(n))
		err = bw.Flush()
	}
	for err == nil {
		select {
		case err = <-readerDone:
			readerDone <- err
		case r := <-in:
			n := 0
			for {
				write(r)
				n++
				select {
				case r = <-in:
					continue
				default:
				}
				break
			}
			outstanding.Add(int64(n))
			if s.timeout > 0 {
				conn.SetReadDeadline(time.Now().Add(s.timeout))
			}
			err = bw.Flush()
		}
	}
	conn.Close()
	err = <-readerDone // the reader has stopped: pending is ours
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = errors.New("connection closed")
	}
	sc.mu.Lock()
	if sc.closed {
		err = sc.closeErr // not the shard's failure
	} else {
		s.failed(err)
	}
	sc.mu.Unlock()
	var timeout net.Error
	resend := !errors.As(err, &timeout) || !timeout.Timeout()
	msg := fmt.Errorf("shard %s (%s): %w before the reply", s.name, s.addr, err)
	again = again[:0]
	for {
		select {
		case r := <-pending:
			if resend && r.again && !r.sent {
				r.sent = true
				again = append(again, r)
			} else {
				r.finish(nil, msg)
			}
		default:
			return again
		}
	}
}

// server is one shard: the connections of a pool to one endpoint of its
// cluster.
type server struct {
	id      int // the pool's number for it, never reused (engine.conns)
	ep      *upstream.Endpoint
	p       *Pool
	addr    string
	name    string // ketama name
	timeout time.Duration
	dial    func() (net.Conn, error)
	// window is how long connect dials again while the shard refuses;
	// down is set once a window ran out, until a dial succeeds.
	window  time.Duration
	down    atomic.Bool
	quit    <-chan struct{} // closed when the pool closes
	gone    atomic.Bool     // the endpoint left the cluster (Pool.retire)
	conns   atomic.Int64
	sc      []*serverConn
	observe func(ok bool, d time.Duration) // nil: no metrics
	runs    *sync.WaitGroup                // the pool's serverConn goroutines
}

// conn returns the server connection of client session n.
func (s *server) conn(n int) *serverConn { return s.sc[n%len(s.sc)] }

// connUp and connDown count an open connection, on the server for
// redis_shards and on the endpoint for the cluster's status and metrics.
func (s *server) connUp() {
	s.conns.Add(1)
	s.ep.AddActive(1)
}

func (s *server) connDown() {
	s.conns.Add(-1)
	s.ep.AddActive(-1)
}

// The backoff of connect: a shard that restarts is back within
// redialMax of accepting again.
const (
	redialFirst = 5 * time.Millisecond
	redialMax   = 100 * time.Millisecond
)

// connect dials the shard, and while the dial fails dials again with a
// short backoff for up to the shard's window, so that a shard restarting
// costs its queued requests (none of which has sent a byte) a wait rather
// than an error. Once a window has run out the shard is down, and connect
// tries once, until a dial succeeds again. The pool closing ends the wait.
func (s *server) connect() (net.Conn, error) {
	start := time.Now()
	wait := redialFirst
	for {
		select {
		case <-s.quit:
			return nil, errClosed
		default:
		}
		if s.gone.Load() {
			return nil, errRemoved
		}
		conn, err := s.dial()
		if err == nil {
			s.down.Store(false)
			return conn, nil
		}
		if s.down.Load() || time.Since(start)+wait > s.window {
			s.down.Store(true)
			return nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.quit:
			t.Stop()
			return nil, errClosed
		}
		wait = min(2*wait, redialMax)
	}
}

// dialer returns a dial func for a health check (Ping) that connects
// (through TLS when tlsFor is set: tlsFor gives the client configuration
// for the address, verification included) and greets the shard (hello).
// connectTimeout bounds all of it. A pool's servers dial through their
// cluster instead (Pool.dialer).
func dialer(addr string, connectTimeout time.Duration, username, password string, tlsFor func(string) *tls.Config) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		defer cancel()
		conn, err := (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		if tlsFor != nil {
			tc := tls.Client(conn, tlsFor(addr))
			if err := tc.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, fmt.Errorf("TLS handshake: %w", err)
			}
			conn = tc
		}
		if err := hello(conn, connectTimeout, username, password); err != nil {
			conn.Close()
			return nil, err
		}
		conn.SetDeadline(time.Time{})
		return conn, nil
	}
}

// hello authenticates on a new shard connection when there is a password,
// and sends PING: a shard that answers anything but +PONG, such as a
// restarted Redis still loading its data (-LOADING, which every command
// would get), is not connected to yet.
func hello(conn net.Conn, timeout time.Duration, username, password string) error {
	var out []byte
	if password != "" {
		args := [][]byte{[]byte("AUTH"), []byte(password)}
		if username != "" {
			args = [][]byte{[]byte("AUTH"), []byte(username), []byte(password)}
		}
		out = resp.AppendCommand(out, args...)
	}
	out = resp.AppendCommand(out, []byte("PING"))
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(out); err != nil {
		return err
	}
	rd := resp.NewReader(conn)
	if password != "" {
		reply, err := rd.ReadReply()
		if err != nil {
			return err
		}
		if len(reply) == 0 || reply[0] != '+' {
			return fmt.Errorf("AUTH refused: %s", bytes.TrimSpace(reply))
		}
	}
	reply, err := rd.ReadReply()
	if err != nil {
		return err
	}
	if string(reply) != "+PONG\r\n" {
		return fmt.Errorf("PING: %s", bytes.TrimSpace(reply))
	}
	return conn.SetDeadline(time.Time{})
}
