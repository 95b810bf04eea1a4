package pgproxy

import (
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawReader and rawWriter read and write a socket with raw recvfrom and
// sendto system calls through its syscall.RawConn, which parks on Go's
// netpoller at EAGAIN and keeps deadlines. Raw calls do not tell the
// scheduler: a loopback write that runs past 20 us (it delivers to the
// peer in the same call) no longer makes sysmon hand the processor to
// another thread, with futex wake-ups and sysmon then polling at its
// fastest rate. The sockets are non-blocking, so a raw call never blocks
// the thread. A reader and a writer keep separate state: one goroutine
// may read a socket while another writes it. (The finding of
// internal/httpproxy and the TCP engine; docs/postgres.md has the figures.)
type rawReader struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

type rawWriter struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// rawConn returns c's raw socket, or nil where it has none (TLS, a test's
// net.Pipe).
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

// newRawReader returns a raw reader of c, or c itself.
func newRawReader(c net.Conn) io.Reader {
	rc := rawConn(c)
	if rc == nil {
		return c
	}
	r := &rawReader{rc: rc}
	r.fn = func(fd uintptr) bool {
		for {
			n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.p))), uintptr(len(r.p)), 0, 0, 0)
			switch e {
			case 0:
				r.n, r.errno = int(n), 0
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			r.n, r.errno = 0, e
			return true
		}
	}
	return r
}

// newRawWriter returns a raw writer of c, or c itself.
func newRawWriter(c net.Conn) io.Writer {
	rc := rawConn(c)
	if rc == nil {
		return c
	}
	w := &rawWriter{rc: rc}
	w.fn = func(fd uintptr) bool {
		for {
			n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(w.p))), uintptr(len(w.p)), unix.MSG_NOSIGNAL, 0, 0)
			switch e {
			case 0:
				w.n, w.errno = int(n), 0
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			w.n, w.errno = 0, e
			return true
		}
	}
	return w
}

func (r *rawReader) Read(p []byte) (int, error) {
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

func (w *rawWriter) Write(p []byte) (int, error) {
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
