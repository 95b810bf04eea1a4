package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PostgresPair starts a primary configured for streaming replication and a
// hot standby cloned from it with pg_basebackup -R, each on its own free
// loopback port, with the same superuser and password. It returns once the
// standby takes connections and the primary reports it streaming. Both
// are stopped, by PID, when the test ends; settings apply to both.
func PostgresPair(t testing.TB, settings ...string) (primary, standby *PG) {
	t.Helper()
	bin := pgBin(t)
	primary = newPG(t, bin, "")
	initdb(t, primary)
	// initdb writes replication lines for 127.0.0.1 already; say so
	// explicitly so that the harness does not depend on the sample file.
	hba, err := os.OpenFile(filepath.Join(primary.Dir, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(hba, "host replication all 127.0.0.1/32 scram-sha-256")
	hba.Close()
	primary.start(t, append([]string{"wal_level=replica", "max_wal_senders=10", "wal_keep_size=64MB"}, settings...)...)

	standby = newPG(t, bin, primary.Password)
	_, port, _ := net.SplitHostPort(primary.Addr)
	// -c fast: do not wait for a spread checkpoint. -X stream: the WAL of
	// the copy comes over a second connection, so the copy is consistent
	// without archiving. -R: standby.signal and primary_conninfo.
	bb := exec.Command(filepath.Join(bin, "pg_basebackup"), "-h", "127.0.0.1", "-p", port, "-U", primary.User,
		"-D", standby.Dir, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	bb.Env = append(os.Environ(), "PGPASSWORD="+primary.Password, "PGCONNECT_TIMEOUT=10")
	asPostgres(t, bb, standby.root)
	if out, err := runBounded(bb, 60*time.Second); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	standby.start(t, append([]string{"hot_standby=on", "wal_receiver_status_interval=1s"}, settings...)...)

	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		n, err := primary.TrySQL("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
		if err == nil && n == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby not streaming after 20s (%q, %v):\n%s", n, err, standby.Log())
		}
	}
	return primary, standby
}

// runBounded runs cmd and kills it, by its PID, when it outlives limit.
func runBounded(cmd *exec.Cmd, limit time.Duration) ([]byte, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return []byte(out.String()), err
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		return []byte(out.String()), fmt.Errorf("%s still running after %v: killed", filepath.Base(cmd.Path), limit)
	}
}

// Promote ends recovery on a standby (pg_ctl promote) and waits until it
// accepts writes.
func (pg *PG) Promote(t testing.TB) {
	t.Helper()
	cmd := exec.Command(filepath.Join(pg.Bin, "pg_ctl"), "promote", "-w", "-t", "30", "-D", pg.Dir)
	asPostgres(t, cmd)
	if out, err := runBounded(cmd, 40*time.Second); err != nil {
		t.Fatalf("pg_ctl promote: %v\n%s\n%s", err, out, pg.Log())
	}
}

// PauseReplay stops a standby applying WAL (pg_wal_replay_pause); it keeps
// receiving it. It waits until replay has paused.
func (pg *PG) PauseReplay(t testing.TB) {
	t.Helper()
	pg.SQL(t, "SELECT pg_wal_replay_pause()")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if pg.SQL(t, "SELECT pg_get_wal_replay_pause_state()") == "paused" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("replay not paused after 20s")
		}
	}
}

// ResumeReplay undoes PauseReplay.
func (pg *PG) ResumeReplay(t testing.TB) {
	t.Helper()
	pg.SQL(t, "SELECT pg_wal_replay_resume()")
}
