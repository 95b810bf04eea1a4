package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
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
	bin := pgBin(t)
	root, err := os.MkdirTemp("", "attache-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	pg := &PG{User: "postgres", Password: fmt.Sprintf("pw-%d", time.Now().UnixNano()), Dir: filepath.Join(root, "data"), Bin: bin}
	pwfile := filepath.Join(root, "pw")
	os.WriteFile(pwfile, []byte(pg.Password+"\n"), 0o644)
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", pg.Dir, "-U", pg.User, "--pwfile", pwfile,
		"--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	asPostgres(t, initdb, root)
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	pg.Addr = FreePort(t)
	_, port, _ := net.SplitHostPort(pg.Addr)
	args := []string{"-D", pg.Dir, "-p", port, "-k", root, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	srv := exec.Command(filepath.Join(bin, "postgres"), args...)
	asPostgres(t, srv)
	logf, _ := os.Create(filepath.Join(root, "postgres.log"))
	srv.Stdout, srv.Stderr = logf, logf
	StartWithSignal(t, srv, os.Interrupt)
	WaitTCP(t, pg.Addr, 20*time.Second)
	// Accepting is not ready: wait until it takes connections.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if exec.Command(filepath.Join(bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", port).Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(root, "postgres.log"))
			t.Fatalf("PostgreSQL not ready after 20s:\n%s", b)
		}
	}
	return pg
}
