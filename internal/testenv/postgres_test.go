package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgresHarness: a private server with SCRAM auth, reached by pgx.
func TestPostgresHarness(t *testing.T) {
	pg := Postgres(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, pg.Addr))
	if err != nil {
		t.Fatalf("pgx with SCRAM: %v", err)
	}
	defer conn.Close(ctx)
	var method string
	if err := conn.QueryRow(ctx, "SHOW password_encryption").Scan(&method); err != nil || method != "scram-sha-256" {
		t.Errorf("password_encryption: %q %v", method, err)
	}
	if _, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:wrong@%s/postgres?sslmode=disable", pg.User, pg.Addr)); err == nil {
		t.Error("wrong password accepted")
	}
	addr := pg.Addr
	pg.Restart(t)
	if pg.Addr != addr {
		t.Errorf("restarted on %s, want %s", pg.Addr, addr)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Error("a session survived the restart")
	}
	if got := pg.SQL(t, "SELECT 1"); got != "1" {
		t.Errorf("after the restart: got %q", got)
	}
}

// TestPostgresPair: the standby streams from the primary, replays its
// writes, can pause replay, and after promotion takes writes itself.
func TestPostgresPair(t *testing.T) {
	primary, standby := PostgresPair(t)
	if got := primary.SQL(t, "SELECT pg_is_in_recovery()"); got != "f" {
		t.Fatalf("primary pg_is_in_recovery: got %q, want f", got)
	}
	if got := standby.SQL(t, "SELECT pg_is_in_recovery()"); got != "t" {
		t.Fatalf("standby pg_is_in_recovery: got %q, want t", got)
	}
	primary.SQL(t, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
	waitSQL(t, standby, "SELECT count(*) FROM t", "1")

	standby.PauseReplay(t)
	primary.SQL(t, "INSERT INTO t VALUES (2)")
	waitSQL(t, standby, "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()", "t")
	if got := standby.SQL(t, "SELECT count(*) FROM t"); got != "1" {
		t.Errorf("paused standby sees %s rows, want 1", got)
	}
	standby.ResumeReplay(t)
	waitSQL(t, standby, "SELECT count(*) FROM t", "2")

	primary.Stop()
	standby.Promote(t)
	if got := standby.SQL(t, "SELECT pg_is_in_recovery()"); got != "f" {
		t.Fatalf("promoted pg_is_in_recovery: got %q, want f", got)
	}
	standby.SQL(t, "INSERT INTO t VALUES (3)")

	// SCRAM over TCP works on the standby too (same password, copied).
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", standby.User, standby.Password, standby.Addr))
	if err != nil {
		t.Fatalf("pgx to the promoted standby: %v", err)
	}
	conn.Close(ctx)
}

func waitSQL(t *testing.T, pg *PG, query, want string) {
	t.Helper()
	var got string
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got, err = pg.TrySQL(query); err == nil && got == want {
			return
		}
	}
	t.Fatalf("%s: got %q (%v), want %q within 20s", query, got, err, want)
}
