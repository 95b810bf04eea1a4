package testenv

import (
	"net"
	"os/exec"
	"testing"
	"time"
)

// Memcached starts a private memcached on a free loopback port, stopped by
// its PID when the test ends (or earlier by stop).
func Memcached(t testing.TB) (addr string, stop func()) {
	t.Helper()
	bin := Binary(t, "memcached", "memcached")
	addr = FreePort(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-l", "127.0.0.1", "-p", port, "-U", "0", "-m", "16", "-u", "nobody")
	stop = Start(t, cmd)
	WaitTCP(t, addr, 10*time.Second)
	return addr, stop
}
