package pgproxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/tcpproxy"
	"github.com/attache-proxy/attache/internal/testenv"
)

// parse is config.Parse with the protocols of these tests: postgres, and
// tcp for a listener of another protocol.
func parse(data []byte) (*config.Config, error) {
	return config.Parse(data, func(string) (string, bool) { return "", false }, []config.Schema{&tcpproxy.Protocol{}, &Protocol{}})
}

// TestOptionErrors: listeners[].postgres is decoded, defaulted and
// validated by this package; each problem is reported with its path and
// line, and so are the listener fields a postgres listener refuses.
func TestOptionErrors(t *testing.T) {
	t.Parallel()
	users := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(users, []byte("\"u\" \"p\"\n"), 0o600)
	badUsers := filepath.Join(t.TempDir(), "bad.txt")
	os.WriteFile(badUsers, []byte("\"u\" \"p\"\nu p\n"), 0o600)
	_, crt, key := testenv.NewCA(t, "ca").Files(t, t.TempDir(), "localhost")
	pgBase := "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: " + users + "}, "
	pg := pgBase
	const pgEnd = "}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]"
	srv := "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: " + users + "}}}]\nclusters: [{name: c, endpoints: [\"h:1\"], postgres: {"
	const srvEnd = "}}]"
	for _, tc := range []struct{ name, yaml, want string }{
		{"match_san pg client_tls", pgBase + "client_tls: {mode: disable, match_san: [{dns: a}]}" + pgEnd, "listeners[0].postgres.client_tls.match_san: client certificates are not checked on client_tls; remove it (line 1)"},
		{"match_san pg server_tls mode", srv + "server_tls: {mode: require, match_san: [{dns: a}]}" + srvEnd, "clusters[0].postgres.server_tls.match_san: needs mode verify-ca or verify-full: mode require does not verify the server's certificate (line 2)"},
		{"pg block on tcp", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c, postgres: {pool_size: 2}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].postgres: only for protocol postgres (line 1)"},
		{"pg pool mode", pgBase + "pool_mode: statement" + pgEnd, `listeners[0].postgres.pool_mode: unknown pool mode "statement" (line 1); want one of ["session" "transaction"]`},
		{"pg pool mode typo", pgBase + "pool_mode: transacion" + pgEnd, `did you mean "transaction"?`},
		{"pg pool size", pgBase + "pool_size: 0" + pgEnd, "listeners[0].postgres.pool_size: must be at least 1 (line 1)"},
		{"pg min pool", pgBase + "pool_size: 2, min_pool_size: 3" + pgEnd, "listeners[0].postgres.min_pool_size: must not be more than pool_size (2) (line 1)"},
		{"pg min pool negative", pgBase + "min_pool_size: -1" + pgEnd, "listeners[0].postgres.min_pool_size: must not be negative"},
		{"pg reserve", pgBase + "reserve_pool_size: -1" + pgEnd, "listeners[0].postgres.reserve_pool_size: must not be negative"},
		{"pg max clients", pgBase + "max_client_connections: 0" + pgEnd, "listeners[0].postgres.max_client_connections: must be at least 1"},
		{"pg wait timeout", pgBase + "query_wait_timeout: -1s" + pgEnd, "listeners[0].postgres.query_wait_timeout: must not be negative"},
		{"pg reserve timeout", pgBase + "reserve_pool_timeout: -1s" + pgEnd, "listeners[0].postgres.reserve_pool_timeout: must not be negative"},
		{"pg idle timeout", srv + "server_idle_timeout: -1s" + srvEnd, "clusters[0].postgres.server_idle_timeout: must not be negative"},
		{"pg lifetime", srv + "server_lifetime: -1s" + srvEnd, "clusters[0].postgres.server_lifetime: must not be negative"},
		{"pg connect timeout", srv + "server_connect_timeout: 0s" + srvEnd, "clusters[0].postgres.server_connect_timeout: must be positive"},
		{"pg duration", srv + "server_lifetime: 1 hour" + srvEnd, `clusters[0].postgres.server_lifetime: invalid duration "1 hour"`},
		{"pg prepared", pgBase + "max_prepared_statements: -1" + pgEnd, "listeners[0].postgres.max_prepared_statements: must not be negative"},
		{"pg prepared txn", pgBase + "pool_mode: transaction, max_prepared_statements: 0" + pgEnd, "listeners[0].postgres.max_prepared_statements: must be at least 1 in transaction mode"},
		{"pg no users file", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].postgres.auth.users_file: required"},
		{"pg users file missing", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: /nonexistent/u}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", `listeners[0].postgres.auth.users_file: no such file "/nonexistent/u" (line 1)`},
		{"pg users file bad", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: " + badUsers + "}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", `listeners[0].postgres.auth.users_file: line 2: want "user" "secret" (line 1)`},
		{"pg auth unknown", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: " + users + ", quer: x}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].postgres.auth.quer: unknown field"},
		{"pg auth query no user", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: " + users + ", query: \"SELECT 1, $1\"}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].postgres.auth.query: needs auth.user (the role that runs it) (line 1)"},
		{"pg auth query no $1", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: " + users + ", user: u, query: \"SELECT 1, 2\"}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].postgres.auth.query: must take the user name as $1"},
		{"pg auth user not listed", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: " + users + ", user: pgbouncer}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", `listeners[0].postgres.auth.user: "pgbouncer" is not in users_file (its password comes from there, like pgbouncer's auth_user from auth_file) (line 1)`},
		{"pg client tls mode", pgBase + "client_tls: {mode: verify-full}" + pgEnd, `listeners[0].postgres.client_tls.mode: unknown client TLS mode "verify-full"`},
		{"pg client tls cert", pgBase + "client_tls: {mode: require}" + pgEnd, "listeners[0].postgres.client_tls.cert_file: required"},
		{"pg client tls ca", pgBase + "client_tls: {mode: disable, ca_file: /x}" + pgEnd, "listeners[0].postgres.client_tls.ca_file: client certificates are not checked"},
		{"pg server tls mode", srv + "server_tls: {mode: verify}" + srvEnd, `clusters[0].postgres.server_tls.mode: unknown server TLS mode "verify"`},
		{"pg server tls ca", srv + "server_tls: {mode: verify-ca}" + srvEnd, "clusters[0].postgres.server_tls.ca_file: required with mode verify-ca"},
		{"pg server tls ca file", srv + "server_tls: {mode: verify-full, ca_file: /nonexistent/ca}" + srvEnd, `clusters[0].postgres.server_tls.ca_file: no such file "/nonexistent/ca"`},
		{"pg unknown key", pgBase + "pool_sise: 3" + pgEnd, "listeners[0].postgres.pool_sise: unknown field"},
		{"pg target", pgBase + "target: read-write" + pgEnd, `listeners[0].postgres.target: unknown target "read-write" (line 1); want one of ["primary" "standby" "prefer_standby" "any"]`},
		{"pg target typo", pgBase + "target: primay" + pgEnd, `listeners[0].postgres.target: unknown target "primay" (line 1); did you mean "primary"?`},
		{"pg target without roles", pgBase + "target: primary" + pgEnd, `listeners[0].postgres.target: primary needs cluster "c" to have a postgres health_check (it learns which endpoint is the primary) (line 1)`},
		{"pg lag negative", pgBase + "target: standby, max_replication_lag: -1s" + pgEnd, "listeners[0].postgres.max_replication_lag: must not be negative (line 1)"},
		{"pg lag for primary", pgBase + "target: primary, max_replication_lag: 5s" + pgEnd, "listeners[0].postgres.max_replication_lag: only for target standby or prefer_standby (line 1)"},
		{"pg lag for any", pgBase + "max_replication_lag: 5s" + pgEnd, "listeners[0].postgres.max_replication_lag: only for target standby or prefer_standby (line 1)"},
		{"idle timeout on postgres", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, idle_timeout: 5m, postgres: {auth: {users_file: " + users + "}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].idle_timeout: not used by postgres listeners"},
		{"listener tls on postgres", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, tls: {cert_file: " + crt + ", key_file: " + key + "}, postgres: {auth: {users_file: " + users + "}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].tls: PostgreSQL negotiates TLS inside its protocol (SSLRequest): use postgres.client_tls instead (line 1)"},
		{"pg client tls prefer without cert", pg + "client_tls: {}" + pgEnd, "listeners[0].postgres.client_tls.cert_file: required with mode prefer: without a certificate no client gets TLS (line 1)"},
		{"pg client tls allow without cert", pg + "client_tls: {mode: allow}" + pgEnd, "listeners[0].postgres.client_tls.cert_file: required with mode allow"},
		{"pg client tls disabled cert", pg + "client_tls: {mode: disable, cert_file: /x}" + pgEnd, "listeners[0].postgres.client_tls.cert_file: not used with mode disable"},
		{"pg server tls disabled ca", srv + "server_tls: {mode: disable, ca_file: " + users + "}" + srvEnd, "clusters[0].postgres.server_tls.ca_file: not used with mode disable"},
		{"pg server tls require ca", srv + "server_tls: {mode: require, ca_file: " + users + "}" + srvEnd, "clusters[0].postgres.server_tls.ca_file: not used with mode require, which does not check the server's certificate; use mode verify-ca or verify-full (line 2)"},
		{"pg server tls server_name", srv + "server_tls: {mode: verify-ca, ca_file: " + users + ", server_name: db}" + srvEnd, "clusters[0].postgres.server_tls.server_name: only used by mode verify-full (mode verify-ca does not check the host name)"},
		{"pg sni", srv + `server_tls: {mode: verify-full, server_name: "db/x"}` + srvEnd, `clusters[0].postgres.server_tls.server_name: "db/x": want a DNS name or an IP address`},
		{"pg reset query NUL", srv + `server_reset_query: "DISCARD ALL\0"` + srvEnd, `clusters[0].postgres.server_reset_query: "DISCARD ALL\x00": must not contain NUL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestMovedToCluster: the server settings that were listeners[].postgres's
// are refused there with the path to write them at now, the cluster's
// index filled in; written there they are read.
func TestMovedToCluster(t *testing.T) {
	t.Parallel()
	users := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(users, []byte("\"u\" \"p\"\n"), 0o600)
	const head = "listeners:\n  - name: db\n    address: \"127.0.0.1:6432\"\n    protocol: postgres\n    cluster: pg\n    postgres:\n"
	auth := "      auth: {users_file: " + users + "}\n"
	const clusters = "clusters:\n  - {name: other, endpoints: [\"h:1\"]}\n  - {name: pg, endpoints: [\"h:2\"]}\n"
	for _, key := range []string{"server_tls: {mode: require}", "server_connect_timeout: 3s", "server_reset_query: \"\"", "server_lifetime: 1m", "server_idle_timeout: 1m"} {
		name, _, _ := strings.Cut(key, ":")
		_, err := parse([]byte(head + auth + "      " + key + "\n" + clusters))
		want := "listeners[0].postgres." + name + ": moved: write it as clusters[1].postgres." + name + " (line 8)"
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %s", name, err, want)
		}
	}
	_, err := parse([]byte(strings.Replace(head, "cluster: pg", "cluster: nope", 1) + auth + "      server_lifetime: 1m\n" + clusters))
	if want := "listeners[0].postgres.server_lifetime: moved: write it as clusters[].postgres.server_lifetime (of the cluster the listener names) (line 8)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("unknown cluster: got %v, want %s", err, want)
	}

	c, err := parse([]byte(head + auth + clusters + "  - name: pg2\n    endpoints: [\"h:3\"]\n    postgres: {server_lifetime: 1m, server_tls: {mode: require}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if o := clusterOptions(&c.Clusters[2]); o.ServerLifetime.D() != time.Minute || o.ServerTLS.Mode != "require" || o.ServerIdleTimeout.D() != DefaultServerIdleTimeout {
		t.Errorf("clusters[2].postgres: got %+v", *o)
	}
}

// TestClusterOptionsUnused: clusters[].postgres on a cluster that only
// listeners of another protocol use is refused; on one no listener uses,
// or left at its defaults, it is not.
func TestClusterOptionsUnused(t *testing.T) {
	t.Parallel()
	const tcp = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	_, err := parse([]byte(tcp + "clusters:\n  - name: c\n    endpoints: [\"h:1\"]\n    postgres: {server_lifetime: 1m}\n"))
	if want := "clusters[0].postgres: not used by tcp listeners (only postgres listeners pool server connections) (line 5)"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	for _, ok := range []string{
		tcp + "clusters: [{name: c, endpoints: [\"h:1\"], postgres: {server_lifetime: 1h}}]",
		tcp + "clusters: [{name: c, endpoints: [\"h:1\"]}, {name: d, endpoints: [\"h:1\"], postgres: {server_lifetime: 1m}}]",
	} {
		if _, err := parse([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestOptionDefaults(t *testing.T) {
	t.Parallel()
	users := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(users, []byte("\"u\" \"p\"\n"), 0o600)
	c, err := parse([]byte("listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: " + users + "}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]"))
	if err != nil {
		t.Fatal(err)
	}
	pg, srv := listenerOptions(&c.Listeners[0]), clusterOptions(&c.Clusters[0])
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"pool_mode", pg.PoolMode, "session"},
		{"max_client_connections", pg.MaxClientConnections, 100},
		{"pool_size", pg.PoolSize, 20},
		{"reserve_pool_timeout", pg.ReservePoolTimeout.D(), 5 * time.Second},
		{"query_wait_timeout", pg.QueryWaitTimeout.D(), 120 * time.Second},
		{"server_connect_timeout", srv.ServerConnectTimeout.D(), 15 * time.Second},
		{"server_idle_timeout", srv.ServerIdleTimeout.D(), 10 * time.Minute},
		{"server_lifetime", srv.ServerLifetime.D(), time.Hour},
		{"server_reset_query", srv.ServerResetQuery, "DISCARD ALL"},
		{"max_prepared_statements", pg.MaxPreparedStatements, 200},
		{"client_tls.mode", pg.ClientTLS.Mode, "disable"},
		{"server_tls.mode", srv.ServerTLS.Mode, "disable"},
		{"auth.query without auth.user", pg.Auth.Query, ""},
		{"target", pg.Target, "any"},
		{"max_replication_lag", pg.MaxReplicationLag.D(), time.Duration(0)},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	c, err = parse([]byte("listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c, postgres: {auth: {users_file: " + users + ", user: u}}}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]"))
	if err != nil {
		t.Fatal(err)
	}
	if q := listenerOptions(&c.Listeners[0]).Auth.Query; q != "SELECT usename, passwd FROM pg_shadow WHERE usename=$1" {
		t.Errorf("auth.query with auth.user: got %q, want pgbouncer's default", q)
	}
}
