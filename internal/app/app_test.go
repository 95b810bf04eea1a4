package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/grpcjson/grpcjsontest"
	"github.com/attache-proxy/attache/internal/protocols"
	"github.com/attache-proxy/attache/internal/testenv"
)

func TestRedisThroughAttache(t *testing.T) {
	t.Parallel()
	backend := testenv.Redis(t)
	h := start(t, yamlf(`
listeners: [{name: cache, address: "127.0.0.1:0", cluster: redis}]
clusters: [{name: redis, endpoints: ["%s"], health_check: {interval: 200ms}}]
`, backend), nil)
	h.waitReady()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: h.addr("cache"), Protocol: 2})
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through attache: %v", err)
	}
	pipe := rdb.Pipeline()
	for i := 0; i < 500; i++ {
		pipe.Set(ctx, fmt.Sprintf("key:%d", i), strings.Repeat("x", i), 0)
	}
	gets := make([]*redis.StringCmd, 500)
	for i := range gets {
		gets[i] = pipe.Get(ctx, fmt.Sprintf("key:%d", i))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	for i, g := range gets {
		if g.Val() != strings.Repeat("x", i) {
			t.Fatalf("key:%d: got %d bytes, want %d", i, len(g.Val()), i)
		}
	}
	// the value is really in the backend
	if got, _ := testenv.RedisCommand(backend, "GET", "k"); got != "$1" {
		t.Errorf("backend GET k: got %q, want $1", got)
	}
	if v := h.metric(`attache_cluster_bytes_total{cluster="redis",direction="to_upstream"}`); v == "" || v == "0" {
		t.Errorf("bytes to upstream metric: got %q", v)
	}
}

// TestRabbitMQWithDeadNode is the RabbitMQ ambassador: the first node is
// dead, the AMQP health check finds it out, and amqp091-go through attache
// publishes and consumes on the live node.
func TestRabbitMQWithDeadNode(t *testing.T) {
	t.Parallel()
	rabbit := testenv.RabbitMQ(t)
	dead := deadAddr(t)
	h := start(t, yamlf(`
listeners: [{name: amqp, address: "127.0.0.1:0", cluster: rabbitmq}]
clusters:
  - name: rabbitmq
    endpoints: ["%s", "%s"]
    balance: first
    health_check: {type: amqp, interval: 200ms, timeout: 150ms}
`, dead, rabbit), nil)
	h.waitReady()
	_, status := h.admin("GET", "/status")
	if !strings.Contains(status, `"state": "unhealthy"`) {
		t.Errorf("status does not show the dead node unhealthy:\n%s", status)
	}
	for i := 0; i < 3; i++ { // several connections: none may land on the dead node
		conn, err := amqp.DialConfig("amqp://guest:guest@"+h.addr("amqp")+"/", amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
		if err != nil {
			t.Fatalf("connection %d through attache: %v", i, err)
		}
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("message %d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := ch.PublishWithContext(ctx, "", q.Name, false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
		cancel()
		msgs, err := ch.Consume(q.Name, "", true, true, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-msgs:
			if string(m.Body) != body {
				t.Errorf("got %q, want %q", m.Body, body)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("message not delivered")
		}
		conn.Close()
	}
}

// TestBackendKilledMidLoad: with two Redis servers behind attache, one is
// killed under load. Clients on it see their connections closed (never
// spliced to the other server), reconnect, and every operation after the
// health check noticed succeeds on the survivor.
func TestBackendKilledMidLoad(t *testing.T) {
	t.Parallel()
	a, stopA := testenv.RedisProc(t)
	b := testenv.Redis(t)
	h := start(t, yamlf(`
listeners: [{name: cache, address: "127.0.0.1:0", cluster: redis}]
clusters:
  - name: redis
    endpoints: ["%s", "%s"]
    health_check: {interval: 500ms, timeout: 500ms, unhealthy_threshold: 1}
`, a, b), nil)
	h.waitReady()
	rdb := redis.NewClient(&redis.Options{Addr: h.addr("cache"), PoolSize: 16, MaxRetries: -1, Protocol: 2})
	defer rdb.Close()

	var killedAt atomic.Int64
	var mu sync.Mutex
	var lateErrs []error
	var ops atomic.Int64
	ctx := context.Background()
	var wg sync.WaitGroup
	// The kill is noticed by the next check (at most an interval away) and
	// the connections to it are closed; a tight check timeout would also
	// fail the live server's checks on a loaded machine, so the window
	// allowed for errors is two seconds, not one interval.
	end := time.Now().Add(4 * time.Second)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				key := fmt.Sprintf("w%d:%d", w, i)
				pipe := rdb.Pipeline()
				pipe.Set(ctx, key, key, 0)
				get := pipe.Get(ctx, key)
				_, err := pipe.Exec(ctx)
				if err == nil && get.Val() != key {
					err = fmt.Errorf("GET %s returned %q: a stream was spliced", key, get.Val())
				}
				ops.Add(1)
				if err != nil {
					if k := killedAt.Load(); k == 0 || time.Since(time.Unix(0, k)) > 2*time.Second {
						mu.Lock()
						lateErrs = append(lateErrs, err)
						mu.Unlock()
					}
				}
			}
		}()
	}
	time.Sleep(time.Second)
	killedAt.Store(time.Now().UnixNano())
	stopA()
	wg.Wait()
	if len(lateErrs) > 0 {
		t.Fatalf("%d operations failed outside the two seconds after the kill (of %d); first: %v", len(lateErrs), ops.Load(), lateErrs[0])
	}
	_, status := h.admin("GET", "/status")
	if !strings.Contains(status, `"state": "unhealthy"`) {
		t.Errorf("killed backend not unhealthy in status:\n%s", status)
	}
}

// TestUnhealthyClosesClientConnections: a backend that stops accepting
// (failing its checks) while holding connections open has those client
// connections closed by attache, so that clients reconnect elsewhere.
func TestUnhealthyClosesClientConnections(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	held := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			held <- c
		}
	}()
	h := start(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", cluster: c}]
clusters: [{name: c, endpoints: ["%s"], health_check: {interval: 100ms, timeout: 100ms, unhealthy_threshold: 2}}]
`, ln.Addr().String()), nil)
	h.waitReady()
	client, err := net.Dial("tcp", h.addr("l"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.Write([]byte("hi"))
	backendConn := <-held
	defer backendConn.Close()
	ln.Close() // checks now fail; the open connection stays open on the backend
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = client.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read: got %v, want the connection closed by attache", err)
	}
}

func TestConnectFailureRetriedOnNextEndpoint(t *testing.T) {
	t.Parallel()
	live, _ := echoServer(t, "live")
	dead := deadAddr(t)
	h := start(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", cluster: c}]
clusters: [{name: c, endpoints: ["%s", "%s"], outlier_detection: {consecutive_failures: 100}}]
`, dead, live), nil)
	for i := 0; i < 10; i++ {
		got, err := ask(h.addr("l"), "ping")
		if err != nil || got != "live:ping" {
			t.Fatalf("connection %d: got %q, %v; want live:ping", i, got, err)
		}
	}
	// round robin sent every other connection to the dead endpoint first
	if v := h.metric(`attache_cluster_connect_errors_total{cluster="c",endpoint="` + dead + `"}`); v != "5" {
		t.Errorf("connect errors to the dead endpoint: got %q, want 5", v)
	}
}

func TestReadyNamesWhatIsMissing(t *testing.T) {
	t.Parallel()
	live, _ := echoServer(t, "live")
	h := start(t, yamlf(`
listeners:
  - {name: a, address: "%s", cluster: up}
  - {name: b, address: "%s", cluster: down}
clusters:
  - {name: up, endpoints: ["%s"], health_check: {interval: 100ms}}
  - {name: down, endpoints: ["%s"], health_check: {interval: 100ms}}
`, testenv.FreePort(t), testenv.FreePort(t), live, deadAddr(t)), nil)
	eventually(t, 5*time.Second, "checks to run", func() bool {
		_, s := h.admin("GET", "/status")
		return !strings.Contains(s, "not checked yet")
	})
	code, body := h.admin("GET", "/ready")
	if code != 503 || !strings.Contains(body, `cluster "down": no healthy endpoint`) || strings.Contains(body, `"up"`) {
		t.Errorf("/ready: got %d %q, want 503 naming only cluster \"down\"", code, body)
	}
	if code, _ := h.admin("GET", "/health"); code != 200 {
		t.Errorf("/health: got %d, want 200", code)
	}
	if v := h.metric("attache_ready"); v != "0" {
		t.Errorf("attache_ready: got %q, want 0", v)
	}
}

// TestReloadUnderLoad: while clients keep the proxy busy, the file is
// rewritten and reloaded several times (new endpoint, new policy, new
// limits). No request fails, the listener keeps its socket, and open
// connections survive.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	r1, r2 := testenv.Redis(t), testenv.Redis(t)
	cfg := func(policy string, eps ...string) string {
		return yamlf(`
listeners: [{name: cache, address: "127.0.0.1:0", cluster: redis, max_connections: %d}]
clusters: [{name: redis, endpoints: ["%s"], balance: %s}]
`, 500+len(eps), strings.Join(eps, `", "`), policy)
	}
	h := start(t, cfg("round_robin", r1), nil)
	addr := h.addr("cache")
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 8, MaxRetries: -1, Protocol: 2})
	defer rdb.Close()
	ctx := context.Background()
	var failures, ops atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if w%2 == 0 { // pooled connections
					key := fmt.Sprintf("w%d:%d", w, i)
					pipe := rdb.Pipeline()
					pipe.Set(ctx, key, "v", 0)
					get := pipe.Get(ctx, key)
					if _, err = pipe.Exec(ctx); err == nil && get.Val() != "v" {
						err = fmt.Errorf("got %q", get.Val())
					}
				} else { // a new connection each time
					var got string
					got, err = ask(addr, "PING\r\n")
					if err == nil && got != "+PONG\r\n" {
						err = fmt.Errorf("got %q", got)
					}
				}
				ops.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	steps := []string{
		cfg("least_connections", r1, r2),
		cfg("p2c", r2, r1),
		cfg("ring_hash", r2),
		cfg("round_robin", r1),
	}
	for i, s := range steps {
		time.Sleep(300 * time.Millisecond)
		h.rewrite(s)
		if i%2 == 0 {
			if code, body := h.admin("POST", "/reload"); code != 200 {
				t.Fatalf("reload %d: %d %s", i, code, body)
			}
		} else {
			want := i + 2 // reload count so far, including the start
			eventually(t, 5*time.Second, "file-watch reload", func() bool {
				return h.metric(`attache_config_reloads_total{result="success"}`) >= fmt.Sprint(want)
			})
		}
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed across reloads; first: %v", n, ops.Load(), firstErr.Load())
	}
	if got := h.addr("cache"); got != addr {
		t.Errorf("listener moved from %s to %s", addr, got)
	}
	t.Logf("%d requests, 0 failed, across %d reloads", ops.Load(), len(steps))
}

// TestInvalidReloadChangesNothing: a broken file is reported with its field
// and line, counted in metrics, and the running config keeps serving.
func TestInvalidReloadChangesNothing(t *testing.T) {
	t.Parallel()
	backend, _ := echoServer(t, "b")
	good := yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", cluster: c}]
clusters: [{name: c, endpoints: ["%s"]}]
`, backend)
	h := start(t, good, nil)
	h.rewrite(yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", cluster: c}]
clusters: [{name: c, endpoints: ["%s"], balance: roundrobin}]
`, backend))
	code, body := h.admin("POST", "/reload")
	if code != 400 || !strings.Contains(body, `clusters[0].balance: unknown policy "roundrobin" (line 4); did you mean "round_robin"?`) {
		t.Fatalf("bad reload: got %d %q", code, body)
	}
	if v := h.metric("attache_config_last_reload_successful"); v != "0" {
		t.Errorf("last_reload_successful: got %q, want 0", v)
	}
	if got, err := ask(h.addr("l"), "x"); err != nil || got != "b:x" {
		t.Errorf("after a failed reload: got %q, %v", got, err)
	}
	if code, _ := h.admin("GET", "/ready"); code != 200 {
		t.Errorf("/ready after a failed reload: got %d, want 200", code)
	}
	if _, s := h.admin("GET", "/status"); !strings.Contains(s, "roundrobin") {
		t.Errorf("/status does not report the failed reload:\n%s", s)
	}
	// a listener that cannot bind fails the whole reload
	busy, _ := net.Listen("tcp", "127.0.0.1:0")
	defer busy.Close()
	h.rewrite(yamlf(`
listeners:
  - {name: l, address: "127.0.0.1:0", cluster: c}
  - {name: m, address: "%s", cluster: c}
clusters: [{name: c, endpoints: ["%s"]}]
`, busy.Addr(), backend))
	if code, body := h.admin("POST", "/reload"); code != 400 || !strings.Contains(body, "address already in use") {
		t.Errorf("reload onto a busy port: got %d %q", code, body)
	}
	h.rewrite(good)
	if code, _ := h.admin("POST", "/reload"); code != 200 {
		t.Fatalf("good reload: %d", code)
	}
	if v := h.metric("attache_config_last_reload_successful"); v != "1" {
		t.Errorf("last_reload_successful after fix: got %q, want 1", v)
	}
}

func TestMaxConnections(t *testing.T) {
	t.Parallel()
	backend, _ := echoServer(t, "b")
	h := start(t, yamlf(`
listeners: [{name: l, address: "127.0.0.1:0", cluster: c, max_connections: 2}]
clusters: [{name: c, endpoints: ["%s"]}]
`, backend), nil)
	var open []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", h.addr("l"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("x"))
		c.Read(make([]byte, 8))
		open = append(open, c)
	}
	_, err := ask(h.addr("l"), "x")
	if err == nil {
		t.Fatal("third connection served over max_connections 2")
	}
	if v := h.metric(`attache_listener_connections_rejected_total{listener="l",reason="max_connections"}`); v != "1" {
		t.Errorf("rejected metric: got %q, want 1", v)
	}
	open[0].Close()
	eventually(t, 2*time.Second, "a slot to free", func() bool {
		got, err := ask(h.addr("l"), "y")
		return err == nil && got == "b:y"
	})
}

// TestDrain: after SIGTERM attache is not ready, still serves the
// application (new connections included), and returns as soon as the last
// connection closes.
func TestDrain(t *testing.T) {
	t.Parallel()
	backend, _ := echoServer(t, "b")
	cfg, err := config.Parse([]byte(yamlf(`
admin: {address: "127.0.0.1:0"}
drain_timeout: 30s
drain_min: 0s
listeners: [{name: l, address: "127.0.0.1:0", cluster: c}]
clusters: [{name: c, endpoints: ["%s"]}]
`, backend)), nil, protocols.Schemas())
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Config: cfg, LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	addr := a.ListenerAddr("l")
	long, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	long.Write([]byte("a"))
	long.Read(make([]byte, 8))
	done := make(chan struct{})
	began := time.Now()
	go func() { a.Shutdown(context.Background()); close(done) }()
	eventually(t, 2*time.Second, "not ready", func() bool { ok, _ := a.Ready(); return !ok })
	if _, reasons := a.Ready(); !strings.Contains(strings.Join(reasons, " "), "draining") {
		t.Errorf("reasons: got %q, want draining", reasons)
	}
	if got, err := ask(addr, "late"); err != nil || got != "b:late" {
		t.Errorf("new connection while draining: got %q, %v", got, err)
	}
	select {
	case <-done:
		t.Fatal("shutdown returned with a connection open")
	case <-time.After(200 * time.Millisecond):
	}
	long.Close()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("shutdown did not return after the last connection closed")
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("drain took %v with a 30s timeout; want it to end with the last connection", d)
	}
}

func TestTLSTerminationWithClientCertsAndRotation(t *testing.T) {
	t.Parallel()
	backend, _ := echoServer(t, "b")
	dir := t.TempDir()
	ca := testenv.NewCA(t, "ca")
	ca.Files(t, dir, "127.0.0.1") // writes ca.crt
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := ca.Issue(t, "127.0.0.1")
	os.WriteFile(crt, c1, 0o600)
	os.WriteFile(key, k1, 0o600)
	h := start(t, yamlf(`
listeners:
  - name: secure
    address: "127.0.0.1:0"
    cluster: c
    tls: {cert_file: "${DIR}/tls.crt", key_file: "${DIR}/tls.key", client_ca_file: "${DIR}/ca.crt", require_client_cert: true}
clusters: [{name: c, endpoints: ["%s"]}]
`, backend), map[string]string{"DIR": dir})

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	cc, ck := ca.Issue(t, "app")
	clientCert, _ := tls.X509KeyPair(cc, ck)
	dial := func(withCert bool) (*tls.Conn, error) {
		cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
		if withCert {
			cfg.Certificates = []tls.Certificate{clientCert}
		}
		return tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", h.addr("secure"), cfg)
	}
	conn, err := dial(true)
	if err != nil {
		t.Fatalf("mTLS dial: %v", err)
	}
	defer conn.Close()
	serial1 := conn.ConnectionState().PeerCertificates[0].SerialNumber
	conn.Write([]byte("hello"))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "b:hello" {
		t.Fatalf("through TLS: got %q, %v", buf[:n], err)
	}

	if nc, err := dial(false); err == nil {
		nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		nc.Write([]byte("x"))
		if _, err := nc.Read(buf); err == nil {
			t.Error("client without a certificate was served")
		}
		nc.Close()
	}

	// rotate the certificate: new handshakes get it, the open one lives on
	c2, k2 := ca.Issue(t, "127.0.0.1")
	os.WriteFile(key+".new", k2, 0o600)
	os.WriteFile(crt+".new", c2, 0o600)
	os.Rename(key+".new", key)
	os.Rename(crt+".new", crt)
	eventually(t, 5*time.Second, "the rotated certificate", func() bool {
		c, err := dial(true)
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(serial1) != 0
	})
	conn.Write([]byte("still"))
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "b:still" {
		t.Errorf("open connection after rotation: got %q, %v", buf[:n], err)
	}
	// a broken certificate keeps the working one and says so
	os.WriteFile(crt, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"), 0o600)
	eventually(t, 5*time.Second, "the TLS reload error metric", func() bool {
		return h.metric(`attache_tls_reload_errors_total{owner="listener secure"}`) == "1"
	})
	if c, err := dial(true); err != nil {
		t.Errorf("handshake after a broken rotation: %v", err)
	} else {
		c.Close()
	}
}

func TestTLSOrigination(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testenv.NewCA(t, "ca")
	caFile, crt, key := ca.Files(t, dir, "localhost")
	_, port, _ := net.SplitHostPort(testenv.TLSEcho(t, crt, key))
	otherDir := t.TempDir()
	otherCA, _, _ := testenv.NewCA(t, "other").Files(t, otherDir, "x")
	h := start(t, yamlf(`
listeners:
  - {name: good, address: "%s", cluster: verified}
  - {name: bad, address: "%s", cluster: wrong-ca}
clusters:
  - {name: verified, endpoints: ["localhost:%s"], tls: {ca_file: "%s"}}
  - {name: wrong-ca, endpoints: ["localhost:%s"], tls: {ca_file: "%s", server_name: localhost}}
`, testenv.FreePort(t), testenv.FreePort(t), port, caFile, port, otherCA), nil)
	if got, err := ask(h.addr("good"), "plain in, TLS out"); err != nil || got != "plain in, TLS out" {
		t.Fatalf("through TLS origination: got %q, %v", got, err)
	}
	if got, err := ask(h.addr("bad"), "x"); err == nil {
		t.Fatalf("unverifiable server was used: got %q", got)
	}
}

func TestExamplesLoad(t *testing.T) {
	dir := t.TempDir()
	testenv.NewCA(t, "ca").Files(t, dir, "tls")
	users := filepath.Join(dir, "users.txt")
	os.WriteFile(users, []byte(`"mydb_user" "pass"`+"\n"), 0o600)
	env := map[string]string{"CERT_DIR": dir, "PG_USERS_FILE": users, "PG_HEALTHCHECK_PASSWORD": "x"}
	env["GRPC_DESCRIPTORS"] = grpcjsontest.WriteSet(t, grpcjsontest.Compile(t, // grpc-transcode.yaml
		map[string]string{"library.proto": strings.ReplaceAll(grpcjsontest.LibraryProto, "test.library.v1", "library.v1")}, "library.proto"))
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) < 3 {
		t.Fatalf("found %d examples, want at least 3", len(files))
	}
	// kube-proxy.yaml reads the pod's service-account files; here they are
	// in dir, found through the API server's environment variables.
	os.WriteFile(filepath.Join(dir, "token"), []byte("t\n"), 0o600)
	env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = "10.96.0.1", "443"
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b = []byte(strings.ReplaceAll(string(b), "kubernetes_api: {}",
				fmt.Sprintf("kubernetes_api: {token_file: %s/token, ca_file: %s/ca.crt}", dir, dir)))
			if _, err := config.Parse(b, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, protocols.Schemas()); err != nil {
				t.Errorf("%s:\n%v", f, err)
			}
		})
	}
}

// TestPostgresHealthCheck: type postgres logs in with SCRAM and runs
// SELECT 1; a wrong password or a dead server is unhealthy.
func TestPostgresHealthCheck(t *testing.T) {
	t.Parallel()
	pg := testenv.Postgres(t)
	// A SCRAM login under -race on a loaded machine can take longer than
	// a tight check timeout: give each check room and wait for the state
	// instead of reading the first result.
	h := start(t, yamlf(`
listeners:
  - {name: good, address: "%s", cluster: good}
  - {name: bad, address: "%s", cluster: badpass}
clusters:
  - {name: good, endpoints: ["%s", "%s"], health_check: {type: postgres, user: postgres, password: "${PGPW}", interval: 2s, timeout: 2s}}
  - {name: badpass, endpoints: ["%s"], health_check: {type: postgres, user: postgres, password: wrong, interval: 2s, timeout: 2s}}
`, testenv.FreePort(t), testenv.FreePort(t), pg.Addr, deadAddr(t), pg.Addr), map[string]string{"PGPW": pg.Password})
	healthy := `attache_cluster_endpoint_healthy{cluster="good",endpoint="` + pg.Addr + `"}`
	eventually(t, 30*time.Second, "the live server with the right password to be healthy", func() bool {
		return h.metric(healthy) == "1"
	})
	eventually(t, 30*time.Second, "checks to run", func() bool {
		_, s := h.admin("GET", "/status")
		return !strings.Contains(s, "not checked yet")
	})
	_, body := h.admin("GET", "/ready")
	if !strings.Contains(body, `cluster "badpass": no healthy endpoint`) || strings.Contains(body, `"good"`) {
		t.Errorf("/ready: %s", body)
	}
}
