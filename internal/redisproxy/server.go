package redisproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attache-proxy/attache/internal/resp"
)

// request is one command on its way to a shard; done is closed when reply
// (or err) is set.
type request struct {
	raw   []byte
	reply []byte
	err   error
	start time.Time
	done  chan struct{}
}

func newRequest(raw []byte) *request {
	return &request{raw: raw, start: time.Now(), done: make(chan struct{})}
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
	closed  bool     // the pool is closed: no request is taken
}

// close closes the connection and refuses requests from now on; what is in
// flight fails.
func (sc *serverConn) close() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.closed = true
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
		sc.mu.Unlock()
		r.finish(nil, errClosed)
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

// run owns one connection: it dials on the first request, and on any
// failure fails everything in flight and queued, and stops, so that the
// next request dials again.
func (sc *serverConn) run(in, pending chan *request) {
	s := sc.s
	fail := func(err error) {
		sc.mu.Lock()
		if sc.in == in {
			sc.in = nil
		}
		closed := sc.closed
		sc.mu.Unlock()
		if closed {
			err = errClosed // not the shard's failure
		} else {
			s.failed(err)
		}
		msg := fmt.Errorf("shard %s (%s): %w", s.name, s.addr, err)
		for {
			select {
			case r := <-pending:
				r.finish(nil, msg)
			case r := <-in:
				r.finish(nil, msg)
			default:
				return
			}
		}
	}
	conn, err := s.dial()
	if err != nil {
		fail(err)
		return
	}
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		conn.Close()
		fail(errClosed)
		return
	}
	sc.conn = conn
	sc.mu.Unlock()
	s.conns.Add(1)
	defer s.conns.Add(-1)
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
	for {
		select {
		case err := <-readerDone:
			conn.Close()
			if errors.Is(err, net.ErrClosed) {
				err = errors.New("connection closed")
			}
			fail(err)
			return
		case r := <-in:
			n := 0
			for {
				bw.Write(r.raw)
				pending <- r
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
			if err := bw.Flush(); err != nil {
				conn.Close()
				fail(<-readerDone)
				return
			}
		}
	}
}

// server is one shard.
type server struct {
	index    int
	addr     string
	name     string // ketama name
	weight   int
	timeout  time.Duration
	dial     func() (net.Conn, error)
	conns    atomic.Int64
	failures atomic.Int32 // consecutive, for auto_eject_hosts
	sc       []*serverConn
	onFail   func(*server, error)
	onOK     func(*server)
	observe  func(ok bool, d time.Duration) // nil: no metrics
	runs     *sync.WaitGroup                // the pool's serverConn goroutines
}

// conn returns the server connection of client session n.
func (s *server) conn(n int) *serverConn { return s.sc[n%len(s.sc)] }

func (s *server) failed(err error) {
	if s.onFail != nil {
		s.onFail(s, err)
	}
}

func (s *server) ok() {
	if s.onOK != nil {
		s.onOK(s)
	}
}

// dialer returns a dial func that connects (through TLS when tlsFor is
// set: tlsFor gives the client configuration for the address, verification
// included), authenticates and checks the reply before handing the
// connection over. connectTimeout bounds all of it.
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
		if password == "" {
			return conn, nil
		}
		args := [][]byte{[]byte("AUTH"), []byte(password)}
		if username != "" {
			args = [][]byte{[]byte("AUTH"), []byte(username), []byte(password)}
		}
		conn.SetDeadline(time.Now().Add(connectTimeout))
		if _, err := conn.Write(resp.AppendCommand(nil, args...)); err != nil {
			conn.Close()
			return nil, err
		}
		reply, err := resp.NewReader(conn).ReadReply()
		if err != nil || len(reply) == 0 || reply[0] != '+' {
			conn.Close()
			if err == nil {
				err = fmt.Errorf("AUTH refused: %s", reply)
			}
			return nil, err
		}
		conn.SetDeadline(time.Time{})
		return conn, nil
	}
}
