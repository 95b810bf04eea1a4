package pgproxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestSCRAMPassThrough: with only the server's own SCRAM verifier in the
// users file, attache logs into the server with the ClientKey of the
// client's exchange, for the first server connection and later ones.
func TestSCRAMPassThrough(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	verifier := f.pg.SQL(t, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") {
		t.Fatalf("app's secret in pg_authid: %q", verifier)
	}

	t.Run("pooled server connections", func(t *testing.T) {
		addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 3, Users: map[string]string{"app": verifier}})
		conns := []*pgx.Conn{}
		for range 3 {
			conns = append(conns, connect(t, addr, "app", "app-pw", ""))
		}
		// Three transactions at once: the pool grows to three server
		// connections, each logged in with the kept key.
		var txs []pgx.Tx
		pids := map[int]bool{}
		for _, c := range conns {
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatalf("begin: %v", err)
			}
			var pid int
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatalf("query in a transaction: %v", err)
			}
			pids[pid] = true
			txs = append(txs, tx)
		}
		for _, tx := range txs {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		st := p.Stats()
		if len(pids) != 3 || len(st) != 1 || st[0].ServersOpened != 3 || st[0].LoginErrors != 0 {
			t.Errorf("backends %v, stats %+v: want 3 server connections opened without login errors", pids, st)
		}
		var who string
		if err := conns[0].QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "app" {
			t.Errorf("current_user: %q %v", who, err)
		}
		_, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:wrong@%s/postgres?sslmode=disable", addr))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "28P01" {
			t.Errorf("wrong password: got %v, want 28P01", err)
		}
	})

	t.Run("no key yet", func(t *testing.T) {
		_, p := f.proxy(t, Config{Mode: TransactionMode, Users: map[string]string{"app": verifier}})
		_, err := p.pool("postgres", "app").acquire()
		if err == nil || !strings.Contains(err.Error(), "no client has logged in with it yet") {
			t.Errorf("server connection without a key: got %v", err)
		}
	})

	t.Run("users file changes the secret", func(t *testing.T) {
		// The key kept belongs to the old secret: new server connections
		// wait for a client to log in with the new one.
		addr, p := f.proxy(t, Config{Mode: TransactionMode, Users: map[string]string{"app": verifier}})
		connect(t, addr, "app", "app-pw", "")
		pl := p.pool("postgres", "app")
		s, err := pl.connect(nil)
		if err != nil {
			t.Fatalf("server connection with the kept key: %v", err)
		}
		s.close()
		p.SetUsers(map[string]string{"app": NewVerifier("app-pw", 4096).String()})
		if _, err := pl.connect(nil); err == nil || !strings.Contains(err.Error(), "no client has logged in with it yet") {
			t.Errorf("after the secret changed: got %v", err)
		}
	})

	t.Run("verifier unlike the server's", func(t *testing.T) {
		// Same password, another salt: the client is authenticated, the
		// server login cannot be made, and the client is told why.
		addr, _ := f.proxy(t, Config{Mode: TransactionMode, Users: map[string]string{"app": NewVerifier("app-pw", 4096).String()}})
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := pgx.Connect(cctx, fmt.Sprintf("postgres://app:app-pw@%s/postgres?sslmode=disable", addr))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "08006" || !strings.Contains(pe.Message, "another salt or iteration count") {
			t.Errorf("got %v, want 08006 naming the salt mismatch", err)
		}
	})
}

// TestAuthQuery: a user who is not in the users file logs in with the
// secret the auth query returns (SCRAM, then passed through to the
// server); wrong passwords and unknown users get 28P01.
func TestAuthQuery(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// The recommended setup: a SECURITY DEFINER function, called by a
	// role that cannot read pg_authid itself.
	f.pg.SQL(t, `CREATE ROLE lookup LOGIN PASSWORD 'lookup-pw';
CREATE FUNCTION public.user_lookup(i_user text, OUT uname text, OUT phash text) RETURNS record
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
  AS $$ SELECT rolname::text, rolpassword FROM pg_authid WHERE rolname = i_user AND rolcanlogin $$;
REVOKE ALL ON FUNCTION public.user_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.user_lookup(text) TO lookup;`)
	for _, tc := range []struct{ name, user, query string }{
		{"default query as superuser", f.pg.User, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"},
		{"security definer function", "lookup", "SELECT uname, phash FROM public.user_lookup($1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			users := map[string]string{f.pg.User: f.pg.Password, "lookup": "lookup-pw"}
			addr, p := f.proxy(t, Config{Mode: TransactionMode, PoolSize: 2, Users: users, AuthUser: tc.user, AuthQuery: tc.query})
			conns := []*pgx.Conn{connect(t, addr, "app", "app-pw", ""), connect(t, addr, "app", "app-pw", "")}
			// Two transactions at once: the second server connection is
			// logged in with the key kept from the first login.
			var txs []pgx.Tx
			for _, c := range conns {
				tx, err := c.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var who string
				if err := tx.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "app" {
					t.Errorf("current_user: %q %v", who, err)
				}
				txs = append(txs, tx)
			}
			for _, tx := range txs {
				tx.Commit(ctx)
			}
			for _, st := range p.Stats() {
				if st.User == "app" && (st.ServersOpened != 2 || st.LoginErrors != 0) {
					t.Errorf("app's pool: %+v, want 2 server connections opened without login errors", st)
				}
			}
			for _, bad := range []struct{ user, pass string }{{"app", "wrong"}, {"nobody", "x"}} {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := pgx.Connect(cctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", bad.user, bad.pass, addr))
				cancel()
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != "28P01" {
					t.Errorf("user %q password %q: got %v, want 28P01", bad.user, bad.pass, err)
				}
			}
		})
	}

	t.Run("query fails", func(t *testing.T) {
		// lookup may not read pg_shadow: the client gets an error, not a
		// password failure, and the reason goes to the log.
		users := map[string]string{"lookup": "lookup-pw"}
		addr, _ := f.proxy(t, Config{Mode: TransactionMode, Users: users, AuthUser: "lookup", AuthQuery: "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"})
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := pgx.Connect(cctx, fmt.Sprintf("postgres://app:app-pw@%s/postgres?sslmode=disable", addr))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "08006" || !strings.Contains(pe.Message, "auth_query failed") {
			t.Errorf("got %v, want 08006 auth_query failed", err)
		}
	})
}
