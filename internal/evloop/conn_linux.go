package evloop

import (
	"io"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/attache-proxy/attache/internal/rawsys"
)

// Conn is a socket an engine serves on a Loop, with what every engine
// does with one: read what is there (Fill), write with the rest queued
// for when the socket takes more (Write, Flush), set the epoll interest
// from that state (Settle), and connect from the loop (Connect, or
// Part.Dial for what must run on a goroutine). Embed it, or hold it by
// value, in the engine's own state of the connection: it is one
// allocation with it. It belongs to the loop goroutine.
type Conn struct {
	Source
	// Out is the output queued, written from off: an engine may append
	// to it (a head to go out with the body that follows), and Write and
	// Flush write it.
	Out     []byte
	off     int
	blocked bool // the socket took less than offered: only Flush writes
}

// maxKeep is the largest output buffer a Conn keeps once it is empty.
const maxKeep = 64 << 10

// AddConn makes fd, served by h, the socket of c (fresh, or closed or
// released before), not yet in the epoll set (see Settle), with nothing
// queued.
func (l *Loop) AddConn(c *Conn, fd int, h Handler) {
	l.add(&c.Source, fd, h)
	c.Out, c.off, c.blocked = c.Out[:0], 0, false
}

// Fill reads what the socket holds into b with one read (a short read
// means drained: level-triggered epoll reports any rest): the bytes read,
// or 0 and io.EOF at the end of the stream, unix.EAGAIN with nothing to
// read, or the socket's error. b must not be empty.
func (c *Conn) Fill(b []byte) (int, error) {
	for {
		n, err := rawsys.Recv(c.FD, b)
		switch {
		case n > 0:
			return n, nil
		case err == nil:
			return 0, io.EOF
		case err != unix.EINTR:
			return 0, err
		}
	}
}

// Pending reports whether output is queued.
func (c *Conn) Pending() bool { return c.off < len(c.Out) }

// Write writes the output queued and then b, with one system call
// (sendmsg for both), and queues what the socket does not take. Once it
// took less than offered, Write only queues until Flush (at the socket's
// Out readiness, which Settle asks for). An error is the socket's: the
// connection is broken.
func (c *Conn) Write(b []byte) error {
	if c.blocked {
		c.Out = append(c.Out, b...)
		return nil
	}
	pend := c.Out[c.off:]
	for {
		var n int
		var err error
		switch {
		case len(pend) == 0 && len(b) == 0:
			return nil
		case len(pend) == 0:
			n, err = rawsys.Send(c.FD, b)
		case len(b) == 0:
			n, err = rawsys.Send(c.FD, pend)
		default:
			n, err = rawsys.Sendv(c.FD, pend, b)
		}
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			n = 0
		default:
			return err
		}
		if n < len(pend) {
			c.off += n
			c.Out = append(c.Out, b...)
			c.blocked = true
			return nil
		}
		n -= len(pend)
		if n < len(b) {
			c.Out, c.off = append(c.Out[:0], b[n:]...), 0
			c.blocked = true
			return nil
		}
		c.Out, c.off = c.Out[:0], 0
		if cap(c.Out) > maxKeep {
			c.Out = nil
		}
		return nil
	}
}

// Flush writes the output queued, as far as the socket takes it: at its
// Out readiness.
func (c *Conn) Flush() error {
	c.blocked = false
	return c.Write(nil)
}

// Send writes b as far as the socket takes it, for an engine that keeps
// its output itself: the bytes written, with a nil error also when the
// socket is full (then fewer than len(b)).
func (c *Conn) Send(b []byte) (int, error) {
	n, err := rawsys.SendAll(c.FD, b)
	if err == unix.EAGAIN {
		err = nil
	}
	return n, err
}

// Settle sets the epoll interest from the state: In (and RdHup) when the
// engine reads, Out while output is queued; neither takes the socket out
// of the set.
func (c *Conn) Settle(read bool) error {
	var m uint32
	if read {
		m = In | RdHup
	}
	if c.Pending() {
		m |= Out
	}
	return c.Want(m)
}

// Connect starts a non-blocking connection to addr from the loop, with
// TCP_NODELAY and keep-alives (as net.Dialer sets them), its socket c's,
// served by h: true when it connected at once; else, once the socket
// reports Out (or an error), ConnectResult tells. The Settle that follows
// must ask for Out.
func (c *Conn) Connect(l *Loop, addr netip.AddrPort, h Handler) (connected bool, err error) {
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if a := addr.Addr(); a.Is4() || a.Is4In6() {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: a.Unmap().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: a.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 30)
	switch err := unix.Connect(fd, sa); err {
	case nil:
		connected = true
	case unix.EINPROGRESS:
	default:
		unix.Close(fd)
		return false, err
	}
	l.AddConn(c, fd, h)
	return connected, nil
}

// ConnectResult is the outcome of Connect once the socket reported Out or
// an error: nil when it connected.
func (c *Conn) ConnectResult() error { return rawsys.ConnectResult(c.FD) }

// Dial runs dial on a goroutine of its own, for a connection that takes
// blocking work (a name to resolve, a login), and passes the socket it
// returns (see Adopt) or its error to done on the loop; the socket is
// closed instead when p has left meanwhile.
func (p *Part) Dial(dial func() (net.Conn, error), done func(fd int, err error)) {
	go func() {
		fd := -1
		conn, err := dial()
		if err == nil {
			fd, err = DupFD(conn)
			conn.Close()
		}
		if !p.Do(func() { done(fd, err) }) && fd >= 0 {
			unix.Close(fd)
		}
	}()
}
