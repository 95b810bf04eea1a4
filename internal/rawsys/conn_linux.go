package rawsys

import (
	"io"
	"net"
	"syscall"
)

// Reader reads a socket with raw recvfrom calls through its
// syscall.RawConn, which parks on Go's netpoller at EAGAIN and keeps the
// connection's deadlines. One goroutine may use a Reader while another
// uses a Writer of the same socket; a Reader itself is not for concurrent
// use.
type Reader struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// Writer writes a socket with raw sendto (and sendmsg) calls through its
// syscall.RawConn; see Reader.
type Writer struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// NewReader returns a raw Reader of c, or c itself where c has no raw
// socket (TLS, net.Pipe).
func NewReader(c net.Conn) io.Reader {
	rc := rawConn(c)
	if rc == nil {
		return c
	}
	r := &Reader{rc: rc}
	r.fn = func(fd uintptr) bool {
		for {
			n, err := Recv(int(fd), r.p)
			if err != syscall.EINTR {
				return done(&r.n, &r.errno, n, err)
			}
		}
	}
	return r
}

// NewWriter returns a raw Writer of c, or c itself where c has no raw
// socket.
func NewWriter(c net.Conn) io.Writer {
	rc := rawConn(c)
	if rc == nil {
		return c
	}
	w := &Writer{rc: rc}
	w.fn = func(fd uintptr) bool {
		for {
			n, err := Send(int(fd), w.p)
			if err != syscall.EINTR {
				return done(&w.n, &w.errno, n, err)
			}
		}
	}
	return w
}

// done records one raw call's result; false (at EAGAIN) asks the RawConn
// to wait for readiness.
func done(n *int, errno *syscall.Errno, m int, err error) bool {
	switch err {
	case nil:
		*n, *errno = m, 0
		return true
	case syscall.EAGAIN:
		return false
	}
	*n, *errno = 0, err.(syscall.Errno)
	return true
}

// Read reads once; 0 bytes from the socket is io.EOF.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.rc.Read(r.fn)
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case r.errno != 0:
		return 0, r.errno
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// Write writes all of p, waiting for room as needed.
func (w *Writer) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		w.p = p[written:]
		err := w.rc.Write(w.fn)
		w.p = nil
		if err != nil {
			return written, err
		}
		if w.errno != 0 {
			return written, w.errno
		}
		written += w.n
	}
	return written, nil
}

// Writev writes a then b, with one sendmsg where the socket takes both.
func (w *Writer) Writev(a, b []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := w.rc.Write(func(fd uintptr) bool {
		for {
			m, err := Sendv(int(fd), a, b)
			if err != syscall.EINTR {
				return done(&n, &errno, m, err)
			}
		}
	})
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		return n, err
	}
	// The rest of a short write, plainly.
	if n < len(a) {
		m, err := w.Write(a[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	if rest := len(a) + len(b) - n; rest > 0 {
		m, err := w.Write(b[len(b)-rest:])
		return n + m, err
	}
	return n, nil
}
