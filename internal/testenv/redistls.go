package testenv

import (
	"net"
	"os/exec"
	"testing"
	"time"
)

// RedisAt starts a private redis-server listening on addr (a free
// loopback address, as from FreePort) with extra arguments after the
// defaults of RedisProc, and waits until addr accepts connections. Stop
// it with the returned func, by its PID (also done when the test ends);
// it may be started again on the same address, as a restarted shard.
func RedisAt(t testing.TB, addr string, args ...string) (stop func()) {
	t.Helper()
	bin := Binary(t, "redis-server", "redis-server")
	_, port, _ := net.SplitHostPort(addr)
	all := append([]string{"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--logfile", ""}, args...)
	stop = Start(t, exec.Command(bin, all...))
	WaitTCP(t, addr, 10*time.Second)
	return stop
}

// RedisTLS is a redis-server that speaks TLS only (its plain port is 0),
// with its certificate issued by a test CA.
type RedisTLS struct {
	Addr   string
	CAFile string // the CA that issued the server's and the client's certificates
	// CertFile and KeyFile are a client certificate from the same CA, for
	// mutual TLS.
	CertFile, KeyFile string
}

// StartRedisTLS starts a TLS-only redis-server whose certificate is for
// name (a DNS name or an IP address). With clientCert it requires and
// verifies a client certificate (tls-auth-clients yes). Extra arguments
// follow (such as "--tls-protocols", "TLSv1.2").
func StartRedisTLS(t testing.TB, name string, clientCert bool, args ...string) *RedisTLS {
	t.Helper()
	ca := NewCA(t, "redis test CA")
	dir := t.TempDir()
	caFile, srvCert, srvKey := ca.Files(t, dir, name)
	_, cliCert, cliKey := ca.Files(t, dir, "client")
	addr := FreePort(t)
	_, port, _ := net.SplitHostPort(addr)
	auth := "no"
	if clientCert {
		auth = "yes"
	}
	all := append([]string{"--tls-port", port, "--tls-cert-file", srvCert, "--tls-key-file", srvKey,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", auth}, args...)
	// The plain port given to RedisAt is replaced by 0: no plaintext.
	RedisAt(t, addr, append(all, "--port", "0")...)
	return &RedisTLS{Addr: addr, CAFile: caFile, CertFile: cliCert, KeyFile: cliKey}
}

// OtherCA writes the certificate of a CA that issued nothing here, for
// tests that must see verification fail.
func OtherCA(t testing.TB) string {
	t.Helper()
	caFile, _, _ := NewCA(t, "unrelated CA").Files(t, t.TempDir(), "x")
	return caFile
}
