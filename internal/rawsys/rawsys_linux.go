// Package rawsys makes the data-path system calls of attache's socket
// engines (internal/tcpproxy, internal/redisproxy) on non-blocking
// sockets without telling Go's scheduler, and gives goroutine-per-
// connection code (the HTTP/1.1 fast path, internal/pgproxy) a Reader and
// a Writer that make the same raw calls through a net.Conn's RawConn.
//
// A raw call never blocks, since the sockets are non-blocking, and it
// skips the scheduler's syscall bookkeeping: a loopback write that runs
// past 20 us no longer makes sysmon hand the processor to another thread
// (a futex wake and a context switch each time). recvfrom and sendto
// rather than read and write: on a socket they skip the file position
// lock. docs/tcp-fast-path.md has the measurements.
//
// Errors are the bare syscall.Errno values (EAGAIN, EINTR, ECONNRESET...),
// so callers compare them directly; converting them to error does not
// allocate.
package rawsys

import (
	"errors"
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Recv reads from fd into b with one recvfrom. 0, nil is end of stream.
func Recv(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// Send writes b to fd with one sendto, without SIGPIPE; it may write less
// than len(b).
func Send(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// Sendv writes a then b to fd with one sendmsg, without SIGPIPE; it may
// write less than both.
func Sendv(fd int, a, b []byte) (int, error) {
	var iov [2]unix.Iovec
	iov[0].Base, iov[0].Len = unsafe.SliceData(a), uint64(len(a))
	iov[1].Base, iov[1].Len = unsafe.SliceData(b), uint64(len(b))
	msg := unix.Msghdr{Iov: &iov[0], Iovlen: 2}
	n, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_NOSIGNAL)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// EpollWait returns the number of events ready on epfd without waiting
// (timeout 0); an error counts as none.
func EpollWait(epfd int, events []unix.EpollEvent) int {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0
	}
	return int(n)
}

// Read reads from fd into b with one read: for an event loop's own
// eventfd and timerfd, which never block.
//
// The loop's bookkeeping calls are raw for the runtime's monitor (sysmon)
// as much as for their own cost: a call through the scheduler wakes
// sysmon when it sleeps, which then polls every 20 us for a while (about
// 1500 nanosleeps a second under an HTTP load with a 5 ms tick).
func Read(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// Write writes b to fd with one write (see Read).
func Write(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// EpollCtl changes epfd's interest in fd (see Read); ev may be nil for
// EPOLL_CTL_DEL.
func EpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// SockError returns the pending error of fd (SO_ERROR), as after a failed
// non-blocking connect: for a socket epoll reported in error, so never
// nil.
func SockError(fd int) error {
	if err := ConnectResult(fd); err != nil {
		return err
	}
	return errSocket
}

// ConnectResult is the outcome of a non-blocking connect on fd once it
// reports writable (or an error): nil when it connected, else its error
// (SO_ERROR).
func ConnectResult(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if v != 0 {
		return syscall.Errno(v)
	}
	return nil
}

var errSocket = errors.New("socket error with no SO_ERROR set")

// SendAll writes b to fd with sendto calls until all of it is written or
// the socket is full. It returns the bytes written and nil when all went,
// EAGAIN when the socket took only n, or the call's error (with n written
// before it). EINTR is retried.
func SendAll(fd int, b []byte) (int, error) {
	written := 0
	for written < len(b) {
		n, err := Send(fd, b[written:])
		if n > 0 {
			written += n
			continue
		}
		switch err {
		case syscall.EINTR:
		case nil: // a stream socket that takes nothing and says nothing
			return written, io.ErrShortWrite
		default:
			return written, err
		}
	}
	return written, nil
}
