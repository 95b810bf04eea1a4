package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// echo serves a TCP echo on a free loopback port.
func echo(t *testing.T) string {
	return testenv.Serve(t, nil, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
}

// roundTrip sends msg through addr and wants it back.
func roundTrip(t *testing.T, addr, msg string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte(msg))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("through %s: got %q, %v; want %q", addr, buf, err, msg)
	}
}

// syncBuffer is a bytes.Buffer safe for the app's writes and the test's
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running runs the command in args until the test ends, and fails the
// test if it returns early or with an error.
func running(t *testing.T, args []string, stdout, stderr io.Writer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%q returned %v", args, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%q did not stop", args)
		}
	})
	t.Cleanup(func() {
		select {
		case err := <-done:
			t.Errorf("%q stopped before the test ended: %v", args, err)
			done <- err
		default:
		}
	})
}

// TestForwardSideBySide: two forwards on one host both serve; neither
// starts an admin server unless asked.
func TestForwardSideBySide(t *testing.T) {
	up := echo(t)
	a, b := testenv.FreePort(t), testenv.FreePort(t)
	var outA, outB bytes.Buffer
	running(t, []string{"forward", a, up}, &outA, io.Discard)
	running(t, []string{"forward", b, up}, &outB, io.Discard)
	testenv.WaitTCP(t, a, 5*time.Second)
	testenv.WaitTCP(t, b, 5*time.Second)
	roundTrip(t, a, "through a")
	roundTrip(t, b, "through b")
}

// TestForwardAdminOnRequest: --admin serves the admin endpoints.
func TestForwardAdminOnRequest(t *testing.T) {
	up := echo(t)
	listen, admin := testenv.FreePort(t), testenv.FreePort(t)
	running(t, []string{"forward", listen, up, "--admin", admin}, io.Discard, io.Discard)
	testenv.WaitTCP(t, listen, 5*time.Second)
	roundTrip(t, listen, "with admin")
	testenv.WaitTCP(t, admin, 5*time.Second)
	resp, err := http.Get("http://" + admin + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin /health: got %v, %v; want 200", resp, err)
	}
	resp.Body.Close()
}

// TestAdminPortTaken: an admin port held by another process never stops
// the data path, for run as for forward; the admin server comes up once
// the port is free.
func TestAdminPortTaken(t *testing.T) {
	up := echo(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	admin := taken.Addr().String()

	listen := testenv.FreePort(t)
	file := filepath.Join(t.TempDir(), "attache.yaml")
	os.WriteFile(file, []byte("admin: {address: \""+admin+"\"}\ndrain_min: 0s\nlisteners: [{name: l, address: \""+listen+"\", cluster: c}]\nclusters: [{name: c, endpoints: [\""+up+"\"]}]\n"), 0o644)
	var logs syncBuffer
	running(t, []string{"run", "--config", file}, io.Discard, &logs)
	fwd := testenv.FreePort(t)
	running(t, []string{"forward", fwd, up, "--admin", admin}, io.Discard, io.Discard)

	testenv.WaitTCP(t, listen, 5*time.Second)
	testenv.WaitTCP(t, fwd, 5*time.Second)
	roundTrip(t, listen, "run serves")
	roundTrip(t, fwd, "forward serves")
	if !strings.Contains(logs.String(), "admin server cannot listen") {
		t.Errorf("got no error logged for the taken admin port:\n%s", logs.String())
	}

	taken.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin server did not come up once its port was free: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	roundTrip(t, listen, "still serving")
}
