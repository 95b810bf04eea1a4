package pgsql

import (
	"context"
	"fmt"
	"testing"

	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// TestClassifyAgainstPostgres checks the classification of statements whose
// scope is easy to get wrong against a real server: each runs on a fresh
// session (inside BEGIN ... COMMIT when tx is set), then probe asks that
// session whether anything is left after the transaction. Classify must pin
// exactly when something is.
func TestClassifyAgainstPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	pg := testenv.Postgres(t)
	ctx := context.Background()
	url := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, pg.Addr)

	temp := func(name string) string {
		return fmt.Sprintf("SELECT coalesce((SELECT relpersistence = 't' FROM pg_class WHERE oid = to_regclass('%s')), false)", name)
	}
	setting := func(name, want string) string {
		return fmt.Sprintf("SELECT coalesce(current_setting('%s', true), '') = '%s'", name, want)
	}
	cases := []struct {
		name, sql string
		tx        bool
		probe     string // true when the statement left state behind
	}{
		{"set in transaction persists", "SET work_mem = '1234kB'", true, setting("work_mem", "1234kB")},
		{"set local", "SET LOCAL work_mem = '1234kB'", true, setting("work_mem", "1234kB")},
		{"set transaction", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", true, setting("default_transaction_isolation", "serializable")},
		{"set session characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", true, setting("default_transaction_isolation", "serializable")},
		{"set role", "SET ROLE pg_monitor", false, "SELECT current_user = 'pg_monitor'"},
		{"update pg_settings", "UPDATE pg_settings SET setting = '1234kB' WHERE name = 'work_mem'", true, setting("work_mem", "1234kB")},
		{"set_config false", "SELECT set_config('attache.x', 'y', false)", true, setting("attache.x", "y")},
		{"set_config true", "SELECT set_config('attache.x', 'y', true)", true, setting("attache.x", "y")},
		{"temp table", "CREATE TEMP TABLE t (a int)", false, temp("t")},
		{"temp table on commit drop", "CREATE TEMP TABLE t (a int) ON COMMIT DROP", false, temp("t")},
		{"temp table on commit drop in transaction", "CREATE TEMP TABLE t (a int) ON COMMIT DROP", true, temp("t")},
		{"temp table on commit delete rows", "CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS", true, temp("t")},
		{"table in pg_temp", "CREATE TABLE pg_temp.t (a int)", false, temp("t")},
		{"table in pg_temp on commit drop", "CREATE TABLE pg_temp.t (a int) ON COMMIT DROP", true, temp("t")},
		{"table named temp_x", "CREATE TABLE temp_x (a int)", false, temp("temp_x")},
		{"select into temp", "SELECT 1 AS a INTO TEMP t", false, temp("t")},
		{"explain analyze create temp table as", "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", false, temp("t")},
		{"temp view", "CREATE TEMP VIEW v AS SELECT 1", false, temp("v")},
		{"temp sequence", "CREATE TEMP SEQUENCE s", false, temp("s")},
		// Each lock its own key: a session's lock goes only when its
		// backend has exited, after the client closed, so a try on the key
		// of the case before may find it still held.
		{"advisory lock", "SELECT pg_advisory_lock(7)", true, "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"},
		{"try advisory lock shared", "SELECT pg_try_advisory_lock_shared(8)", true, "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"},
		{"xact advisory lock", "SELECT pg_advisory_xact_lock(9)", true, "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"},
		{"listen", "LISTEN attache_ch", true, "SELECT count(*) > 0 FROM pg_listening_channels()"},
		{"prepare", "PREPARE q AS SELECT 1", true, "SELECT count(*) > 0 FROM pg_prepared_statements"},
		{"cursor with hold", "DECLARE c CURSOR WITH HOLD FOR SELECT 1", true, "SELECT count(*) > 0 FROM pg_cursors WHERE name = 'c'"},
		{"cursor", "DECLARE c CURSOR FOR SELECT 1", true, "SELECT count(*) > 0 FROM pg_cursors WHERE name = 'c'"},
		{"SET inside a function body", "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN SET work_mem = '1234kB'; END $$", true, setting("work_mem", "1234kB")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			text := c.sql
			if c.tx {
				text = "BEGIN; " + text + "; COMMIT"
			}
			// The simple protocol, as the pooler sees it in a Query message.
			if _, err := conn.PgConn().Exec(ctx, text).ReadAll(); err != nil {
				t.Fatalf("%s: %v", text, err)
			}
			var left bool
			if err := conn.QueryRow(ctx, c.probe).Scan(&left); err != nil {
				t.Fatalf("%s: %v", c.probe, err)
			}
			if pin := Classify(text).Pin; (pin != "") != left {
				t.Errorf("Classify(%q).Pin = %q, but state left behind = %v", text, pin, left)
			}
			conn.Exec(ctx, "DROP TABLE IF EXISTS temp_x; DROP FUNCTION IF EXISTS f()")
		})
	}
}
