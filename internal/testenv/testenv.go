// Package testenv starts the real servers that integration tests run
// against (redis-server, RabbitMQ) on free loopback ports, and stops them
// when the test ends. Without the server binary a test is skipped with a
// message saying what to install, except under CI (CI=true), where the same
// condition fails the test: CI must never pass by skipping.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// CI reports whether the tests run under CI, where skips are failures.
func CI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips t, or fails it under CI, saying why.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("CI=true and %s", msg)
	}
	t.Skip(msg)
}

// Binary returns the path of a server binary, or skips (fails under CI).
func Binary(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "%s not found: install Debian package %s (apt-get install %s)", name, debianPackage, debianPackage)
	}
	return p
}

// FreePort returns a loopback TCP address that was free a moment ago. The
// port is drawn from below the kernel's ephemeral range: a port from that
// range, once closed, may be taken by any outgoing connection on the
// machine (other tests, benchmarks) before the test binds it again.
func FreePort(t testing.TB) string {
	t.Helper()
	lo := ephemeralLow()
	for range 200 {
		port := 10000 + rand.IntN(lo-10000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		return ln.Addr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				return n
			}
		}
	}
	return 32768
}

// Redis starts a private redis-server on a free loopback port and returns
// its address. It is stopped, by its PID, when the test ends.
func Redis(t testing.TB) string {
	t.Helper()
	addr, _ := RedisProc(t)
	return addr
}

// Start starts cmd and registers its stop (SIGTERM, then SIGKILL after 5s)
// with t. The returned stop may be called earlier; it waits for the exit.
func Start(t testing.TB, cmd *exec.Cmd) (stop func()) {
	t.Helper()
	return StartWithSignal(t, cmd, syscall.SIGTERM)
}

// StartWithSignal is Start with another stop signal (PostgreSQL's fast
// shutdown is SIGINT; its SIGTERM waits for clients to leave).
func StartWithSignal(t testing.TB, cmd *exec.Cmd, sig os.Signal) (stop func()) {
	t.Helper()
	dieWithParent(cmd, sig)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(sig)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not accept connections within %v: %v", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RabbitMQ returns the address of a running RabbitMQ node that speaks AMQP
// 0-9-1 with guest/guest: the machine's own on 127.0.0.1:5672 (or
// ATTACHE_TEST_AMQP_ADDR). Starting a broker takes many seconds and an
// Erlang node name, so the tests share the machine's; .ci/run starts it
// when it is not running.
func RabbitMQ(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("ATTACHE_TEST_AMQP_ADDR")
	if addr == "" {
		addr = "127.0.0.1:5672"
	}
	if err := probeAMQP(addr); err != nil {
		Unavailable(t, "no RabbitMQ at %s (%v): install rabbitmq-server and run 'rabbitmq-server -detached'", addr, err)
	}
	return addr
}

func probeAMQP(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	c.Write([]byte("AMQP\x00\x00\x09\x01"))
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		return err
	}
	if b[0] != 1 {
		return fmt.Errorf("not an AMQP 0-9-1 server")
	}
	return nil
}

// RedisCommand sends one inline command to a Redis server and returns the
// first line of the reply; for checks that need no client library.
func RedisCommand(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%s\r\n%s\r\n", strconv.Itoa(len(a)), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// RedisClients is a Redis server's connected_clients (INFO clients), not
// counting the connection that asks.
func RedisClients(t testing.TB, addr string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("INFO clients on %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write([]byte("*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n"))
	rd := bufio.NewReader(c)
	head, err := rd.ReadString('\n')
	n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	body := make([]byte, n)
	if err == nil {
		_, err = io.ReadFull(rd, body)
	}
	for _, line := range strings.Split(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(line, "connected_clients:"); ok && err == nil {
			if k, err := strconv.Atoi(v); err == nil {
				return k - 1
			}
		}
	}
	t.Fatalf("INFO clients on %s: %v %q", addr, err, body)
	return 0
}

// RedisProc is Redis that the test can also stop early, by its PID.
func RedisProc(t testing.TB) (addr string, stop func()) {
	t.Helper()
	bin := Binary(t, "redis-server", "redis-server")
	addr = FreePort(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--logfile", "")
	stop = Start(t, cmd)
	WaitTCP(t, addr, 10*time.Second)
	return addr, stop
}

// LogBuffer collects log output written from many goroutines.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
