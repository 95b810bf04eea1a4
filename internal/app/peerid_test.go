package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/attache-proxy/attache/internal/testenv"
)

const (
	spiffeOrders   = "spiffe://cluster.local/ns/shop/sa/orders"
	spiffePayments = "spiffe://cluster.local/ns/shop/sa/payments"
)

// meshPKI is a CA with its file in dir, issuing certificates with the
// names a service mesh gives its workloads.
type meshPKI struct {
	t      *testing.T
	ca     *testenv.CA
	dir    string
	caFile string
	roots  *x509.CertPool
}

func newMeshPKI(t *testing.T) *meshPKI {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "mesh-ca")
	caFile, _, _ := ca.Files(t, dir, "unused")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &meshPKI{t: t, ca: ca, dir: dir, caFile: caFile, roots: roots}
}

// files writes a certificate with sans as dir/<name>.crt and .key.
func (p *meshPKI) files(name string, sans ...string) (crt, key string) {
	return p.ca.WriteSANs(p.t, p.dir, name, name, sans...)
}

// pair is a certificate with sans, in memory.
func (p *meshPKI) pair(sans ...string) tls.Certificate {
	c, k := p.ca.IssueSANs(p.t, "workload", sans...)
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		p.t.Fatal(err)
	}
	return pair
}

// tlsEcho serves an echo over TLS with a certificate that has only sans.
func (p *meshPKI) tlsEcho(sans ...string) string {
	return testenv.Serve(p.t, &tls.Config{Certificates: []tls.Certificate{p.pair(sans...)}}, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
}

// tlsAsk is ask over TLS with a client certificate of sans.
func (p *meshPKI) tlsAsk(addr, msg string, sans ...string) (string, error) {
	cfg := &tls.Config{RootCAs: p.roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{p.pair(sans...)}}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, cfg)
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
	return string(buf[:n]), err
}

// TestMatchSANTCP: TLS origination accepts an upstream by its SPIFFE ID
// alone (its certificate has no DNS name or IP, so a host name check would
// fail) and refuses one of another service account; TLS termination
// accepts clients of the namespace by uri_prefix and refuses others. Each
// refusal is a log line naming peer, presented and expected names, and a
// count. A rotated listener certificate keeps the check.
func TestMatchSANTCP(t *testing.T) {
	t.Parallel()
	p := newMeshPKI(t)
	orders := p.tlsEcho(spiffeOrders)
	payments := p.tlsEcho(spiffePayments, "payments.shop.svc")
	plain, _ := echoServer(t, "app")
	crt, key := p.files("attache", "127.0.0.1")
	text := yamlf(`
listeners:
  - {name: to-orders, address: "%[8]s", cluster: orders}
  - {name: to-impostor, address: "%[9]s", cluster: impostor}
  - name: in
    address: "%[10]s"
    cluster: app
    tls:
      cert_file: %[1]s
      key_file: %[2]s
      client_ca_file: %[3]s
      require_client_cert: true
      match_san: [{uri_prefix: "spiffe://cluster.local/ns/shop/"}]
clusters:
  - name: orders
    endpoints: ["%[4]s"]
    tls: {ca_file: %[3]s, server_name: orders.shop.svc, match_san: [{uri: "%[6]s"}]}
  - name: impostor
    endpoints: ["%[5]s"]
    tls: {ca_file: %[3]s, match_san: [{uri: "%[6]s"}, {dns: orders.shop.svc}]}
  - {name: app, endpoints: ["%[7]s"]}
`, crt, key, p.caFile, orders, payments, spiffeOrders, plain, testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t))
	h := start(t, text, nil)

	_, body := h.admin("GET", "/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v", err)
	}
	if got := strings.Join(st.Listeners[2].PeerNames, " "); got != "uri_prefix:spiffe://cluster.local/ns/shop/" {
		t.Errorf("/status listener in match_san: got %q", got)
	}
	if got := strings.Join(st.Clusters[1].PeerNames, " "); got != "uri:"+spiffeOrders+" dns:orders.shop.svc" {
		t.Errorf("/status cluster impostor match_san: got %q", got)
	}
	if _, page := h.admin("GET", "/"); !strings.Contains(page, "yes, peers uri_prefix:spiffe://cluster.local/ns/shop/") ||
		!strings.Contains(page, "TLS peers uri:"+spiffeOrders+" dns:orders.shop.svc") {
		t.Errorf("status page: match_san missing from\n%s", page)
	}

	// origination
	if got, err := ask(h.addr("to-orders"), "hi"); err != nil || got != "hi" {
		t.Fatalf("to the upstream with the expected SPIFFE ID: got %q, %v", got, err)
	}
	if got, err := ask(h.addr("to-impostor"), "hi"); err == nil {
		t.Fatalf("upstream of another service account was used: got %q", got)
	}
	if got := h.metric(`attache_tls_peer_rejections_total{owner="cluster impostor"}`); got != "1" {
		t.Errorf("rejections of cluster impostor: got %q, want 1", got)
	}
	wantLog := fmt.Sprintf(`owner="cluster impostor" peer=%s presented="dns:payments.shop.svc uri:%s" expected="uri:%s dns:orders.shop.svc"`, payments, spiffePayments, spiffeOrders)
	if !strings.Contains(h.logs.String(), wantLog) {
		t.Errorf("no log line with %s", wantLog)
	}

	// termination
	if got, err := p.tlsAsk(h.addr("in"), "hello", "spiffe://cluster.local/ns/shop/sa/frontend"); err != nil || got != "app:hello" {
		t.Fatalf("client of the namespace: got %q, %v", got, err)
	}
	if got, err := p.tlsAsk(h.addr("in"), "hello", "spiffe://cluster.local/ns/other/sa/frontend", "frontend.shop.svc"); err == nil {
		t.Fatalf("client of another namespace was served: got %q", got)
	}
	eventually(t, 5*time.Second, "the listener's rejection count", func() bool {
		return h.metric(`attache_tls_peer_rejections_total{owner="listener in"}`) == "1"
	})
	wantLog = `expected=uri_prefix:spiffe://cluster.local/ns/shop/`
	if logs := h.logs.String(); !strings.Contains(logs, `owner="listener in" peer=127.0.0.1:`) ||
		!strings.Contains(logs, `presented="dns:frontend.shop.svc uri:spiffe://cluster.local/ns/other/sa/frontend" `+wantLog) {
		t.Errorf("no log line for the refused client in:\n%s", logs)
	}

	// rotation of the listener's certificate: served, and the check stays
	first := serialOf(t, p, h.addr("in"))
	p.files("attache", "127.0.0.1")
	eventually(t, 10*time.Second, "the rotated certificate", func() bool {
		return serialOf(t, p, h.addr("in")) != first
	})
	if got, err := p.tlsAsk(h.addr("in"), "again", "spiffe://cluster.local/ns/shop/sa/frontend"); err != nil || got != "app:again" {
		t.Errorf("after rotation, client of the namespace: got %q, %v", got, err)
	}
	if _, err := p.tlsAsk(h.addr("in"), "again", "spiffe://cluster.local/ns/other/sa/frontend"); err == nil {
		t.Error("after rotation, client of another namespace was served")
	}

	// a reload that changes match_san applies to the next handshake
	h.rewrite(strings.Replace(text, "spiffe://cluster.local/ns/shop/", "spiffe://cluster.local/ns/other/", 1))
	eventually(t, 10*time.Second, "the reloaded match_san", func() bool {
		got, err := p.tlsAsk(h.addr("in"), "reloaded", "spiffe://cluster.local/ns/other/sa/frontend")
		return err == nil && got == "app:reloaded"
	})
	if _, err := p.tlsAsk(h.addr("in"), "reloaded", "spiffe://cluster.local/ns/shop/sa/frontend"); err == nil {
		t.Error("after the reload, a client of the namespace no longer listed was served")
	}
}

// serialOf returns the serial number of the certificate the listener at
// addr presents.
func serialOf(t *testing.T, p *meshPKI, addr string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.roots, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{p.pair("spiffe://cluster.local/ns/shop/sa/probe")}})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestMatchSANHTTP: the same through an HTTP listener with net/http
// clients, to HTTPS upstreams (HTTP/2 by ALPN).
func TestMatchSANHTTP(t *testing.T) {
	t.Parallel()
	p := newMeshPKI(t)
	backend := func(name string, sans ...string) string {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", name, r.Proto)
		}))
		srv.EnableHTTP2 = true
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.pair(sans...)}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	orders := backend("orders", spiffeOrders)
	payments := backend("payments", spiffePayments)
	crt, key := p.files("attache", "127.0.0.1")
	h := start(t, yamlf(`
listeners:
  - name: in
    address: "127.0.0.1:0"
    protocol: http
    tls:
      cert_file: %[1]s
      key_file: %[2]s
      client_ca_file: %[3]s
      require_client_cert: true
      match_san: [{uri: "spiffe://cluster.local/ns/shop/sa/frontend"}, {dns: frontend.shop.svc}]
    routes:
      - {match: {prefix: /orders}, to: [{cluster: orders}]}
      - {match: {prefix: /}, to: [{cluster: impostor}]}
clusters:
  - {name: orders, endpoints: ["%[4]s"], http: {version: "2"}, tls: {ca_file: %[3]s, match_san: [{uri_prefix: "spiffe://cluster.local/ns/shop/sa/"}]}}
  - {name: impostor, endpoints: ["%[5]s"], tls: {ca_file: %[3]s, match_san: [{uri: "%[6]s"}]}}
`, crt, key, p.caFile, orders, payments, spiffeOrders), nil)

	client := func(sans ...string) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true,
			TLSClientConfig: &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.pair(sans...)}}}}
	}
	base := "https://" + h.addr("in")
	frontend := client("frontend.shop.svc")
	resp, body := httpGet(t, frontend, base+"/orders", nil)
	if resp.StatusCode != 200 || body != "orders HTTP/2.0" {
		t.Fatalf("client frontend to orders: got %d %q, want 200 \"orders HTTP/2.0\"", resp.StatusCode, body)
	}
	resp, body = httpGet(t, frontend, base+"/pay", nil)
	if resp.StatusCode != 503 || !strings.Contains(body, "upstream connect failure") {
		t.Errorf("to an upstream of another service account: got %d %q, want 503 upstream connect failure", resp.StatusCode, body)
	}
	if got := h.metric(`attache_tls_peer_rejections_total{owner="cluster impostor"}`); got == "" || got == "0" {
		t.Errorf("rejections of cluster impostor: got %q, want at least 1", got)
	}
	if want := fmt.Sprintf(`owner="cluster impostor" peer=%s presented=uri:%s expected=uri:%s`, payments, spiffePayments, spiffeOrders); !strings.Contains(h.logs.String(), want) {
		t.Errorf("no log line with %s", want)
	}

	if r, err := client("spiffe://cluster.local/ns/shop/sa/frontend").Get(base + "/orders"); err != nil || r.StatusCode != 200 {
		t.Errorf("client by SPIFFE ID: got %v, %v", r, err)
	} else {
		r.Body.Close()
	}
	if r, err := client("spiffe://cluster.local/ns/shop/sa/intruder", "intruder.shop.svc").Get(base + "/orders"); err == nil {
		r.Body.Close()
		t.Fatalf("client of another service account was served: %d", r.StatusCode)
	}
	eventually(t, 5*time.Second, "the listener's rejection count", func() bool {
		return h.metric(`attache_tls_peer_rejections_total{owner="listener in"}`) == "1"
	})
	if want := `presented="dns:intruder.shop.svc uri:spiffe://cluster.local/ns/shop/sa/intruder" expected="uri:spiffe://cluster.local/ns/shop/sa/frontend dns:frontend.shop.svc"`; !strings.Contains(h.logs.String(), want) {
		t.Errorf("no log line with %s", want)
	}
}

// TestMatchSANPostgres: server_tls checks the server's names in mode
// verify-full (with the host name) and verify-ca (without), against a real
// PostgreSQL whose certificate carries a SPIFFE ID.
func TestMatchSANPostgres(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "attache-pgsan-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	p := newMeshPKI(t)
	srvCrt, srvKey := p.ca.WriteSANs(t, dir, "server", "server", "127.0.0.1", "spiffe://cluster.local/ns/data/sa/postgres")
	os.Chmod(srvCrt, 0o644)
	if u, err := user.Lookup("postgres"); err == nil && os.Getuid() == 0 {
		// PostgreSQL reads its key as the postgres user: give it the key.
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		os.Chown(srvKey, uid, gid)
	}
	pg := testenv.Postgres(t, "ssl=on", "ssl_cert_file="+srvCrt, "ssl_key_file="+srvKey)
	users := filepath.Join(dir, "users.txt")
	os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", pg.User, pg.Password)), 0o600)
	h := start(t, yamlf(`
listeners:
  - name: full
    address: "%[1]s"
    protocol: postgres
    cluster: full
    postgres: {auth: {users_file: "%[2]s"}}
  - name: ca
    address: "%[4]s"
    protocol: postgres
    cluster: ca
    postgres: {auth: {users_file: "%[2]s"}}
  - name: wrong
    address: "%[5]s"
    protocol: postgres
    cluster: wrong
    postgres: {auth: {users_file: "%[2]s"}}
clusters:
  - {name: full, endpoints: ["%[6]s"], postgres: {server_tls: {mode: verify-full, ca_file: "%[3]s", match_san: [{uri: "spiffe://cluster.local/ns/data/sa/postgres"}]}}}
  - {name: ca, endpoints: ["%[6]s"], postgres: {server_tls: {mode: verify-ca, ca_file: "%[3]s", match_san: [{uri_prefix: "spiffe://cluster.local/ns/data/"}]}}}
  - {name: wrong, endpoints: ["%[6]s"], postgres: {server_tls: {mode: verify-ca, ca_file: "%[3]s", match_san: [{uri: "spiffe://cluster.local/ns/data/sa/replica"}, {dns: replica.data.svc}]}}}
`, testenv.FreePort(t), users, p.caFile, testenv.FreePort(t), testenv.FreePort(t), pg.Addr), nil)
	login := func(listener string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, h.addr(listener)))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var ssl bool
		if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
			return fmt.Errorf("server connection over TLS: %v %v", ssl, err)
		}
		return nil
	}
	for _, l := range []string{"full", "ca"} {
		if err := login(l); err != nil {
			t.Errorf("listener %s, server with the expected SPIFFE ID: %v", l, err)
		}
	}
	var pe *pgconn.PgError
	if err := login("wrong"); !errors.As(err, &pe) || pe.Code != "08006" {
		t.Fatalf("server with other names: got %v, want 08006", err)
	}
	if got := h.metric(`attache_tls_peer_rejections_total{owner="listener wrong server_tls"}`); got == "" || got == "0" {
		t.Errorf("rejections: got %q, want at least 1", got)
	}
	want := fmt.Sprintf(`owner="listener wrong server_tls" peer=%s presented="uri:spiffe://cluster.local/ns/data/sa/postgres ip:127.0.0.1" expected="uri:spiffe://cluster.local/ns/data/sa/replica dns:replica.data.svc"`, pg.Addr)
	if !strings.Contains(h.logs.String(), want) {
		t.Errorf("no log line with %s", want)
	}
}

// TestMatchSANRedis: a sharded redis cluster's tls checks the shards'
// names for commands and for the redis health check alike: the shard's
// certificate holds the IP 127.0.0.1, which one cluster expects and the
// other does not.
func TestMatchSANRedis(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedisTLS(t, "127.0.0.1", false)
	h := start(t, yamlf(`
listeners:
  - {name: good, address: "%[4]s", protocol: redis, cluster: good}
  - {name: bad, address: "%[5]s", protocol: redis, cluster: bad}
clusters:
  - name: good
    endpoints: ["%[1]s:1 shard0"]
    health_check: {type: redis, interval: 200ms, timeout: 150ms}
    tls: {ca_file: %[2]s, match_san: [{ip: 127.0.0.1}]}
  - name: bad
    endpoints: ["%[1]s:1 shard0"]
    health_check: {type: redis, interval: 200ms, timeout: 150ms}
    tls: {ca_file: %[2]s, match_san: [{dns: %[3]s}]}
`, r.Addr, r.CAFile, "redis.cache.svc", testenv.FreePort(t), testenv.FreePort(t)), nil)
	for cluster, want := range map[string]string{"good": "1", "bad": "0"} {
		m := `attache_cluster_endpoint_healthy{cluster="` + cluster + `",endpoint="` + r.Addr + `"}`
		eventually(t, 10*time.Second, m+" "+want, func() bool { return h.metric(m) == want })
	}
	ctx := context.Background()
	for l, wantOK := range map[string]bool{"good": true, "bad": false} {
		rdb := redis.NewClient(&redis.Options{Addr: h.addr(l), DisableIdentity: true, MaxRetries: -1})
		err := rdb.Set(ctx, "k", "v", 0).Err()
		rdb.Close()
		if (err == nil) != wantOK {
			t.Errorf("SET through listener %s: got %v, want ok=%v", l, err, wantOK)
		}
	}
	// The health check refuses the shard every 200ms: each time counted,
	// the same refusal logged again only after a while.
	m := `attache_tls_peer_rejections_total{owner="cluster bad"}`
	eventually(t, 10*time.Second, m+" at least 5", func() bool { n, _ := strconv.Atoi(h.metric(m)); return n >= 5 })
	want := `owner="cluster bad" peer=` + r.Addr + ` presented=ip:127.0.0.1 expected=dns:redis.cache.svc`
	lines := strings.Count(h.logs.String(), want)
	if n, _ := strconv.Atoi(h.metric(m)); lines == 0 || lines >= n {
		t.Errorf("log lines with %s: got %d for %d refusals, want at least 1 and fewer than the refusals", want, lines, n)
	}
}
