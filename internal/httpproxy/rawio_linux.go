package httpproxy

import (
	"io"
	"net"
	"syscall"

	"github.com/attache-proxy/attache/internal/rawsys"
)

// rawIO reads and writes a socket with raw recvfrom/sendto system calls
// through its syscall.RawConn (which parks on Go's netpoller at EAGAIN and
// keeps deadlines). Raw calls do not tell the scheduler: a loopback write
// that runs past 20 us no longer makes sysmon hand the processor to another
// thread (futex wakes, and sysmon then polling at its fastest rate), and
// recvfrom/sendto skip the file position lock of read/write. The sockets
// are non-blocking, so a raw call never blocks the thread. (The same
// finding as the TCP engine's, docs/tcp-fast-path.md.)
type rawIO struct {
	rc      syscall.RawConn
	p       []byte
	n       int
	errno   syscall.Errno
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
}

// newRawIO returns c's raw reader and writer, or c itself where there is
// no raw socket (a test's net.Pipe).
func newRawIO(c net.Conn) io.ReadWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawIO{rc: rc}
	r.readFn = func(fd uintptr) bool {
		for {
			n, err := rawsys.Recv(int(fd), r.p)
			if err != syscall.EINTR {
				return r.done(n, err)
			}
		}
	}
	r.writeFn = func(fd uintptr) bool {
		for {
			n, err := rawsys.Send(int(fd), r.p)
			if err != syscall.EINTR {
				return r.done(n, err)
			}
		}
	}
	return r
}

// done records the result of one raw call for Read or Write; false (at
// EAGAIN) asks the RawConn to wait for readiness.
func (r *rawIO) done(n int, err error) bool {
	switch err {
	case nil:
		r.n, r.errno = n, 0
		return true
	case syscall.EAGAIN:
		return false
	}
	r.n, r.errno = 0, err.(syscall.Errno)
	return true
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.rc.Read(r.readFn)
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

func (r *rawIO) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		r.p = p[written:]
		err := r.rc.Write(r.writeFn)
		r.p = nil
		if err != nil {
			return written, err
		}
		if r.errno != 0 {
			return written, r.errno
		}
		written += r.n
	}
	return written, nil
}

// writev writes a then b with one sendmsg where it can.
func (r *rawIO) writev(a, b []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := r.rc.Write(func(fd uintptr) bool {
		for {
			m, err := rawsys.Sendv(int(fd), a, b)
			switch err {
			case nil:
				n, errno = m, 0
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			errno = err.(syscall.Errno)
			return true
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
		m, err := r.Write(a[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	if rest := len(a) + len(b) - n; rest > 0 {
		m, err := r.Write(b[len(b)-rest:])
		return n + m, err
	}
	return n, nil
}
