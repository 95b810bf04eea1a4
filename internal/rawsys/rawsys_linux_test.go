package rawsys

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSendRecv(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	buf := make([]byte, 16)
	if n, err := Recv(fds[1], buf); n != -1 || err != syscall.EAGAIN {
		t.Fatalf("Recv on an empty socket: got %d, %v, want -1, EAGAIN", n, err)
	}
	if n, err := Send(fds[0], []byte("abc")); n != 3 || err != nil {
		t.Fatalf("Send: got %d, %v", n, err)
	}
	if n, err := Sendv(fds[0], []byte("de"), []byte("f")); n != 3 || err != nil {
		t.Fatalf("Sendv: got %d, %v", n, err)
	}
	if n, err := Recv(fds[1], buf); err != nil || string(buf[:n]) != "abcdef" {
		t.Fatalf("Recv: got %q, %v, want abcdef", buf[:n], err)
	}
	// SendAll fills the socket and says EAGAIN with what it took.
	big := make([]byte, 8<<20)
	n, err := SendAll(fds[0], big)
	if err != syscall.EAGAIN || n <= 0 || n >= len(big) {
		t.Fatalf("SendAll of 8 MiB to an unread socket: got %d, %v, want part of it and EAGAIN", n, err)
	}
	for m := 0; m < n; {
		k, err := Recv(fds[1], make([]byte, 64<<10))
		if err != nil {
			t.Fatalf("draining after SendAll: %v", err)
		}
		m += k
	}
	if n, err := SendAll(fds[0], []byte("ok")); n != 2 || err != nil {
		t.Fatalf("SendAll with room: got %d, %v, want 2, nil", n, err)
	}
	Recv(fds[1], buf)
	if allocs := testing.AllocsPerRun(100, func() { Recv(fds[1], buf) }); allocs != 0 {
		t.Errorf("Recv at EAGAIN allocates %v times, want 0", allocs)
	}
	unix.Close(fds[1])
	if _, err := Send(fds[0], []byte("x")); err != syscall.EPIPE {
		t.Errorf("Send to a closed peer: got %v, want EPIPE (and no SIGPIPE)", err)
	}
}

func TestEpollWaitAndSockError(t *testing.T) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(epfd)
	events := make([]unix.EpollEvent, 4)
	if n := EpollWait(epfd, events); n != 0 {
		t.Fatalf("EpollWait on an empty set: got %d, want 0 at once", n)
	}
	// A non-blocking connect to a closed loopback port fails with
	// ECONNREFUSED, reported by SO_ERROR.
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(ln)
	unix.Close(ln) // bound, never listening: the port refuses
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	switch err := unix.Connect(fd, sa); err {
	case unix.EINPROGRESS:
	case unix.ECONNREFUSED:
		t.Skip("the kernel refused the connect at once; SO_ERROR has nothing to report")
	default:
		t.Fatalf("non-blocking connect to a closed port: got %v, want EINPROGRESS", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(fd)}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000 && EpollWait(epfd, events) == 0; i++ {
		unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
	}
	if err := SockError(fd); err != syscall.ECONNREFUSED {
		t.Errorf("SockError after a refused connect: got %v, want ECONNREFUSED", err)
	}
}

// TestEventfdAndEpollCtl: the loop's own calls, on an eventfd.
func TestEventfdAndEpollCtl(t *testing.T) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	if err := EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		t.Fatal(err)
	}
	if err := EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != syscall.EEXIST {
		t.Fatalf("adding it twice: got %v, want EEXIST", err)
	}
	events := make([]unix.EpollEvent, 4)
	if n := EpollWait(ep, events); n != 0 {
		t.Fatalf("ready before a write: %d", n)
	}
	var b [8]byte
	if n, err := Read(efd, b[:]); n != -1 || err != syscall.EAGAIN {
		t.Fatalf("Read of an unset eventfd: got %d, %v, want -1, EAGAIN", n, err)
	}
	b[0] = 3
	if n, err := Write(efd, b[:]); n != 8 || err != nil {
		t.Fatalf("Write: got %d, %v", n, err)
	}
	if n := EpollWait(ep, events); n != 1 || events[0].Fd != int32(efd) {
		t.Fatalf("after a write: %d ready", n)
	}
	b = [8]byte{}
	if n, err := Read(efd, b[:]); n != 8 || err != nil || b[0] != 3 {
		t.Fatalf("Read: got %d, %v, value %d", n, err, b[0])
	}
	if err := EpollCtl(ep, unix.EPOLL_CTL_DEL, efd, nil); err != nil {
		t.Fatal(err)
	}
}
