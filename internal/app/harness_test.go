package app

import (
	"context"
	"fmt"
	"io"
	"maps"
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

type harness struct {
	t    *testing.T
	app  *App
	file string
	logs *testenv.LogBuffer
}

// start boots attache from a configuration text, the way `attache run`
// does, with admin on a free port unless the text sets one. It is shut down
// when the test ends.
func start(t *testing.T, yaml string, env map[string]string) *harness {
	t.Helper()
	return startWith(t, yaml, env, Options{})
}

// startWith is start with options beyond the config file, env and logs.
func startWith(t *testing.T, yaml string, env map[string]string, opts Options) *harness {
	t.Helper()
	if !strings.Contains(yaml, "admin:") {
		yaml = "admin: {address: \"127.0.0.1:0\"}\n" + yaml
	}
	file := filepath.Join(t.TempDir(), "attache.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(t.Name(), "TestHTTPOnNetHTTP/") {
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["ATTACHE_HTTP_FAST_PATH"] = "off"
	}
	logs := &testenv.LogBuffer{}
	opts.ConfigPath, opts.LogOutput, opts.LogLevel, opts.ConfigPoll = file, logs, "debug", 100*time.Millisecond
	opts.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	a, err := New(opts)
	if err != nil {
		t.Fatalf("start attache: %v", err)
	}
	h := &harness{t: t, app: a, file: file, logs: logs}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx, ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("attache logs:\n%s", logs.String())
		}
	})
	return h
}

// addr returns a listener's bound address.
func (h *harness) addr(listener string) string {
	h.t.Helper()
	a := h.app.ListenerAddr(listener)
	if a == "" {
		h.t.Fatalf("no listener %q", listener)
	}
	return a
}

// admin GETs (or POSTs, for /reload) an admin path and returns code and body.
func (h *harness) admin(method, path string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(method, "http://"+h.app.AdminAddr()+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of the first /metrics line starting with prefix.
func (h *harness) metric(prefix string) string {
	h.t.Helper()
	_, body := h.admin("GET", "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			return strings.TrimPrefix(line, prefix+" ")
		}
	}
	return ""
}

// waitReady waits for /ready to answer 200.
func (h *harness) waitReady() {
	h.t.Helper()
	eventually(h.t, 10*time.Second, "attache ready", func() bool {
		ok, _ := h.app.Ready()
		return ok
	})
}

// rewrite replaces the configuration file.
func (h *harness) rewrite(yaml string) {
	h.t.Helper()
	if !strings.Contains(yaml, "admin:") {
		yaml = "admin: {address: \"127.0.0.1:0\"}\n" + yaml
	}
	if err := os.WriteFile(h.file, []byte(yaml), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echoServer accepts connections and echoes each line prefixed by name.
func echoServer(t *testing.T, name string) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String(), serveEcho(t, ln, name)
}

// serveEcho serves echoServer's echo on ln until stop or the test's end;
// stop closes ln and the connections it accepted.
func serveEcho(t *testing.T, ln net.Listener, name string) (stop func()) {
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						c.Write([]byte(name + ":" + string(buf[:n])))
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	stop = func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(stop)
	return stop
}

// ask sends msg over a new connection to addr and returns the reply.
func ask(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func yamlf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// wirePathEnv is the environment that serves HTTP on one wire path:
// "engine" (or ""), the event loops; "goroutine", the portable path
// (ATTACHE_EVENT_LOOPS=off); "off" or "net/http", net/http for everything
// (ATTACHE_HTTP_FAST_PATH=off).
func wirePathEnv(path string) map[string]string {
	switch path {
	case "goroutine":
		return map[string]string{"ATTACHE_EVENT_LOOPS": "off"}
	case "off", "net/http":
		return map[string]string{"ATTACHE_HTTP_FAST_PATH": "off"}
	}
	return nil
}
