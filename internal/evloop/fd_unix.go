//go:build unix

package evloop

import (
	"errors"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Dup duplicates fd, close-on-exec in the same call (no window for a
// fork to inherit it).
func Dup(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// Adopt takes c's socket for a loop: a duplicate of its descriptor (see
// DupFD), c closed. On error c is left open.
func Adopt(c net.Conn) (int, error) {
	fd, err := DupFD(c)
	if err == nil {
		c.Close()
	}
	return fd, err
}

// DupFD returns a duplicate of c's socket descriptor (close-on-exec; it
// stays non-blocking, as Go made it). c must be a plain *net.TCPConn or
// *net.UnixConn; closing c afterwards leaves the duplicate open and out of
// Go's netpoller.
func DupFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errNotSocket
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = Dup(int(fd)) }); err != nil {
		return -1, err
	}
	return nfd, derr
}

// NetConn gives a released descriptor back to Go as a net.Conn,
// consuming fd (it is closed here, the net.Conn holds a duplicate).
func NetConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "attache-socket")
	defer f.Close()
	return net.FileConn(f)
}

var errNotSocket = errors.New("not a socket")
