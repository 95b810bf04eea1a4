package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/pgproxy"
	"github.com/attache-proxy/attache/internal/testenv"
)

// TestPostgresListener: the seed's database ambassador from a config file,
// with pgx as the application: transaction pooling, the pool in /status
// and in /metrics. Not parallel: initdb and the 2-core machine would make
// the short health-check intervals of the parallel tests time out.
func TestPostgresListener(t *testing.T) {
	pg := testenv.Postgres(t)
	users := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", pg.User, pg.Password)), 0o600)
	h := start(t, yamlf(`
listeners:
  - name: db
    address: "127.0.0.1:0"
    protocol: postgres
    cluster: pg
    postgres: {pool_mode: transaction, pool_size: 2, auth: {users_file: "%s", user: postgres}}
clusters:
  - {name: pg, endpoints: ["%s"], health_check: {type: postgres, user: postgres, password: "${PGPW}", interval: 2s}}
`, users, pg.Addr), map[string]string{"PGPW": pg.Password})
	h.waitReady()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conns []*pgx.Conn
	for range 5 {
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, h.addr("db")))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		conns = append(conns, c)
	}
	for i := range 20 {
		var n int
		if err := conns[i%5].QueryRow(ctx, "SELECT $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d: got %d %v", i, n, err)
		}
	}
	if _, err := conns[0].Exec(ctx, "SET work_mem = '8MB'"); err != nil {
		t.Fatal(err)
	}
	_, body := h.admin("GET", "/status")
	var st pgStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	var pools string
	for _, l := range st.Listeners {
		if l.Name == "db" {
			if len(l.Pools) != 1 || l.Pools[0].ServersOpen > 2 || l.Pools[0].Transactions < 20 {
				t.Errorf("/status pools: %+v", l.Pools)
			}
			pools = fmt.Sprint(l.Pools)
		}
	}
	if pools == "" {
		t.Fatalf("/status has no pools for listener db: %s", body)
	}
	if v := h.metric(`attache_postgres_transactions_total{database="postgres",listener="db",user="postgres"}`); v == "" || v == "0" {
		t.Errorf("transactions metric: %q", v)
	}
	if v := h.metric(`attache_postgres_pins_total{database="postgres",kind="SET",listener="db",user="postgres"}`); v != "1" {
		t.Errorf("pins metric: %q, want 1", v)
	}
	if v := h.metric(`attache_postgres_wait_seconds_count{database="postgres",listener="db",user="postgres"}`); v == "" || strings.HasPrefix(v, "0") {
		t.Errorf("wait histogram count: %q", v)
	}

	// A role that is not in the users file logs in through the auth
	// query (run as postgres), its SCRAM secret passed through.
	pg.SQL(t, "CREATE ROLE viaquery LOGIN PASSWORD 'vq-pw'")
	vq, err := pgx.Connect(ctx, fmt.Sprintf("postgres://viaquery:vq-pw@%s/postgres?sslmode=disable", h.addr("db")))
	if err != nil {
		t.Fatalf("login through auth.query: %v", err)
	}
	var who string
	if err := vq.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "viaquery" {
		t.Errorf("current_user through auth.query: %q %v", who, err)
	}
	vq.Close(ctx)

	// A reload reads the users file again and keeps the pools.
	logins := h.metric(`attache_postgres_server_logins_total{database="postgres",listener="db",user="postgres"}`)
	os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", pg.User, "changed")), 0o600)
	if code, body := h.admin("POST", "/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	_, err = pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, h.addr("db")))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Errorf("old password after the users file changed: got %v, want 28P01", err)
	}
	// conns[0] is pinned (SET) and keeps its server connection; a new
	// server login would now fail, since attache logs in with the file's
	// password.
	var n int
	if err := conns[0].QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Errorf("a connected client after the reload: %v", err)
	}
	if got := h.metric(`attache_postgres_server_logins_total{database="postgres",listener="db",user="postgres"}`); got != logins {
		t.Errorf("server logins went from %s to %s across the reload; want the pool kept", logins, got)
	}
}

// TestPostgresTLSRotation: client_tls files replaced on disk are used by
// the next client's handshake; a broken replacement keeps the working
// certificate and is counted.
func TestPostgresTLSRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	users := filepath.Join(dir, "users.txt")
	os.WriteFile(users, []byte(`"u" "p"`+"\n"), 0o600)
	ca := testenv.NewCA(t, "ca")
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := ca.Issue(t, "127.0.0.1")
	os.WriteFile(crt, c1, 0o600)
	os.WriteFile(key, k1, 0o600)
	// The TLS handshake comes before any server is needed.
	h := start(t, yamlf(`
listeners:
  - name: db
    address: "127.0.0.1:0"
    protocol: postgres
    cluster: pg
    postgres: {auth: {users_file: "%s"}, client_tls: {cert_file: "%s", key_file: "%s", mode: require}}
clusters: [{name: pg, endpoints: ["127.0.0.1:1"]}]
`, users, crt, key), nil)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	serial := func() (*big.Int, error) {
		conn, err := net.DialTimeout("tcp", h.addr("db"), 2*time.Second)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		req, _ := (&pgproto3.SSLRequest{}).Encode(nil)
		conn.Write(req)
		b := make([]byte, 1)
		if _, err := io.ReadFull(conn, b); err != nil || b[0] != 'S' {
			return nil, fmt.Errorf("SSLRequest answered %q %v", b, err)
		}
		tc := tls.Client(conn, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber, nil
	}
	first, err := serial()
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c2, k2 := ca.Issue(t, "127.0.0.1")
	os.WriteFile(key+".new", k2, 0o600)
	os.WriteFile(crt+".new", c2, 0o600)
	os.Rename(key+".new", key)
	os.Rename(crt+".new", crt)
	eventually(t, 5*time.Second, "the rotated certificate", func() bool {
		s, err := serial()
		return err == nil && s.Cmp(first) != 0
	})
	os.WriteFile(crt, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"), 0o600)
	eventually(t, 5*time.Second, "the TLS reload error metric", func() bool {
		return h.metric(`attache_tls_reload_errors_total{owner="listener db client_tls"}`) == "1"
	})
	if _, err := serial(); err != nil {
		t.Errorf("handshake after a broken rotation: %v", err)
	}
}

// TestPostgresServerTLSRotation: a server_tls ca_file replaced on disk is
// used by the next server connection. The first CA does not sign the
// server's certificate, so logins fail until the right one is put in.
func TestPostgresServerTLSRotation(t *testing.T) {
	dir, err := os.MkdirTemp("", "attache-pgtls-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	right, wrong := testenv.NewCA(t, "right"), testenv.NewCA(t, "wrong")
	c, k := right.Issue(t, "127.0.0.1")
	srvCrt, srvKey := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	os.WriteFile(srvCrt, c, 0o644)
	os.WriteFile(srvKey, k, 0o600)
	if u, err := user.Lookup("postgres"); err == nil && os.Getuid() == 0 {
		// PostgreSQL reads its key as the postgres user: give it the key.
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		os.Chown(srvKey, uid, gid)
	}
	pg := testenv.Postgres(t, "ssl=on", "ssl_cert_file="+srvCrt, "ssl_key_file="+srvKey)
	users := filepath.Join(dir, "users.txt")
	os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", pg.User, pg.Password)), 0o600)
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, wrong.CertPEM, 0o600)
	h := start(t, yamlf(`
listeners:
  - name: db
    address: "127.0.0.1:0"
    protocol: postgres
    cluster: pg
    postgres: {auth: {users_file: "%s"}}
clusters: [{name: pg, endpoints: ["%s"], postgres: {server_tls: {mode: verify-ca, ca_file: "%s"}}}]
`, users, pg.Addr, caFile), nil)
	login := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, h.addr("db")))
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
	var pe *pgconn.PgError
	if err := login(); !errors.As(err, &pe) || pe.Code != "08006" {
		t.Fatalf("with a CA that did not sign the server's certificate: got %v, want 08006", err)
	}
	os.WriteFile(caFile+".new", right.CertPEM, 0o600)
	os.Rename(caFile+".new", caFile)
	eventually(t, 5*time.Second, "a server login with the rotated ca_file", func() bool { return login() == nil })
}

// pgStatus is /status with the pools of postgres listeners.
type pgStatus struct {
	Listeners []struct {
		Name  string              `json:"name"`
		Pools []pgproxy.PoolStats `json:"postgres_pools"`
	} `json:"listeners"`
}
