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
	"syscall"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: d, protocl: tcp}]\nclusters: [{name: c, endpoints: [\"h:1\"], balance: roundrobin}]\n"), 0o644)

	var out, errb bytes.Buffer
	if err := Run(context.Background(), []string{"validate", "--config", good}, &out, &errb); err != nil || ExitCode(err, &errb) != 0 {
		t.Fatalf("good file: %v, %s", err, errb.String())
	}
	if !strings.Contains(out.String(), "ok (1 listeners, 1 clusters)") {
		t.Errorf("stdout: %q", out.String())
	}
	out.Reset()
	errb.Reset()
	err := Run(context.Background(), []string{"validate", "--config", bad}, &out, &errb)
	if code := ExitCode(err, &errb); code != 1 {
		t.Errorf("bad file: exit %d, want 1", code)
	}
	for _, want := range []string{
		"3 problem(s)",
		`listeners[0].protocl: unknown field (line 1); did you mean "protocol"?`,
		`listeners[0].cluster: unknown cluster "d" (line 1)`,
		`clusters[0].balance: unknown policy "roundrobin" (line 2); did you mean "round_robin"?`,
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"run"}, {"validate"}, {"forward", "8000"}, {"forward", "1", "h:1", "--sni", "x"}} {
		var errb bytes.Buffer
		err := Run(context.Background(), args, io.Discard, &errb)
		if code := ExitCode(err, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "attache ") {
		t.Errorf("version: %q, %v", out.String(), err)
	}
}

// TestForwardTLS is the socat seed: plain TCP in, verified TLS out.
func TestForwardTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "ca")
	caFile, crt, key := ca.Files(t, dir, "localhost")
	_, port, _ := net.SplitHostPort(testenv.TLSEcho(t, crt, key))
	listen := testenv.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		done <- Run(ctx, []string{"forward", listen, "localhost:" + port, "--tls", "--ca", caFile, "--admin", "127.0.0.1:0"}, &out, io.Discard)
	}()
	testenv.WaitTCP(t, listen, 5*time.Second)
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	c.Write([]byte("over TLS"))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	c.Close()
	if err != nil || string(buf[:n]) != "over TLS" {
		t.Fatalf("through forward --tls: got %q, %v", buf[:n], err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("forward returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("forward did not stop")
	}
}

func TestListenAddr(t *testing.T) {
	for in, want := range map[string]string{"8000": "127.0.0.1:8000", ":8000": ":8000", "0.0.0.0:1": "0.0.0.0:1"} {
		if got := listenAddr(in); got != want {
			t.Errorf("listenAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRunSignals: SIGHUP reloads the file, SIGTERM drains and returns.
func TestRunSignals(t *testing.T) {
	backend, _ := net.Listen("tcp", "127.0.0.1:0")
	defer backend.Close()
	admin := testenv.FreePort(t)
	file := filepath.Join(t.TempDir(), "attache.yaml")
	os.WriteFile(file, []byte("admin: {address: \""+admin+"\"}\ndrain_min: 0s\nlisteners: [{name: l, address: \""+testenv.FreePort(t)+"\", cluster: c}]\nclusters: [{name: c, endpoints: [\""+backend.Addr().String()+"\"]}]\n"), 0o644)
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), []string{"run", "--config", file}, io.Discard, io.Discard) }()
	testenv.WaitTCP(t, admin, 5*time.Second)
	reloads := func() string {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, `attache_config_reloads_total{result="success"} `); ok {
				return v
			}
		}
		return ""
	}
	if got := reloads(); got != "1" {
		t.Fatalf("reloads before SIGHUP: got %q, want 1", got)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for reloads() != "2" {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not reload: reloads %q", reloads())
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after SIGTERM with no connection open")
	}
}
