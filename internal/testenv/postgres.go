package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PG is a private PostgreSQL server started for a test.
type PG struct {
	Addr     string // 127.0.0.1:port
	User     string // superuser, "postgres"
	Password string // SCRAM-SHA-256
	Dir      string // data directory
	Bin      string // directory of the server binaries

	root     string // holds Dir, the Unix socket (trust auth) and postgres.log
	settings []string
	stop     func()
}

// pgBin finds the newest installed PostgreSQL server binaries.
func pgBin(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	Unavailable(t, "PostgreSQL server binaries (initdb, postgres) not found: install Debian package postgresql")
	return ""
}

// asPostgres runs cmd as the postgres user when the tests run as root
// (PostgreSQL refuses to run as root).
func asPostgres(t testing.TB, cmd *exec.Cmd, dirs ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		Unavailable(t, "running as root and no postgres user to run PostgreSQL as")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, d := range dirs {
		os.Chown(d, uid, gid)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
}

// Postgres initialises a data directory (SCRAM-SHA-256 for TCP, superuser
// "postgres" with a random password) and starts PostgreSQL on a free
// loopback port. It is stopped, by its PID, when the test ends.
func Postgres(t testing.TB, settings ...string) *PG {
	t.Helper()
	pg := newPG(t, pgBin(t), "")
	initdb(t, pg)
	pg.start(t, settings...)
	return pg
}

// newPG makes a root directory for one server. password "" picks a
// random one.
func newPG(t testing.TB, bin, password string) *PG {
	t.Helper()
	root, err := os.MkdirTemp("", "attache-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	if password == "" {
		password = fmt.Sprintf("pw-%d", time.Now().UnixNano())
	}
	return &PG{User: "postgres", Password: password, Dir: filepath.Join(root, "data"), Bin: bin, root: root}
}

func initdb(t testing.TB, pg *PG) {
	t.Helper()
	pwfile := filepath.Join(pg.root, "pw")
	os.WriteFile(pwfile, []byte(pg.Password+"\n"), 0o644)
	initdb := exec.Command(filepath.Join(pg.Bin, "initdb"), "-D", pg.Dir, "-U", pg.User, "--pwfile", pwfile,
		"--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	asPostgres(t, initdb, pg.root)
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
}

// start runs the server of pg.Dir on a free loopback port (pg.Addr's, once
// it has one) and waits until it takes connections.
func (pg *PG) start(t testing.TB, settings ...string) {
	t.Helper()
	if pg.Addr == "" {
		pg.Addr = FreePort(t)
	}
	pg.settings = settings
	_, port, _ := net.SplitHostPort(pg.Addr)
	args := []string{"-D", pg.Dir, "-p", port, "-k", pg.root, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	srv := exec.Command(filepath.Join(pg.Bin, "postgres"), args...)
	asPostgres(t, srv)
	logf, _ := os.Create(filepath.Join(pg.root, "postgres.log"))
	srv.Stdout, srv.Stderr = logf, logf
	pg.stop = StartWithSignal(t, srv, os.Interrupt)
	WaitTCP(t, pg.Addr, 20*time.Second)
	// Accepting is not ready: wait until it takes connections.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if exec.Command(filepath.Join(pg.Bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", port).Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PostgreSQL not ready after 20s:\n%s", pg.Log())
		}
	}
}

// Stop shuts the server down (fast shutdown, by its PID) and waits for it
// to exit. It is safe to call more than once.
func (pg *PG) Stop() { pg.stop() }

// Restart stops the server (a fast shutdown, which terminates every
// session) and starts it again on the same port with the same settings.
// t must be the test that started it, whose end stops it (not a subtest).
func (pg *PG) Restart(t testing.TB) {
	t.Helper()
	pg.stop()
	pg.start(t, pg.settings...)
}

// Log returns the server's log so far.
func (pg *PG) Log() string {
	b, _ := os.ReadFile(filepath.Join(pg.root, "postgres.log"))
	return string(b)
}

// SQL runs query with psql as the superuser over the Unix socket and
// returns its unaligned, tuples-only output without the final newline.
func (pg *PG) SQL(t testing.TB, query string) string {
	t.Helper()
	out, err := pg.TrySQL(query)
	if err != nil {
		t.Fatalf("psql on %s: %v", pg.Addr, err)
	}
	return out
}

// TrySQL is SQL that returns the error instead of failing the test.
func (pg *PG) TrySQL(query string) (string, error) {
	_, port, _ := net.SplitHostPort(pg.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(pg.Bin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", pg.root, "-p", port, "-U", pg.User, "-d", "postgres", "-c", query)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", query, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSuffix(string(out), "\n"), nil
}
