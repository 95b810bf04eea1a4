// Package kubeenv starts a real Kubernetes API server (etcd and
// kube-apiserver, the binaries tools/build.sh builds) on free loopback ports
// for integration tests. It is a subpackage of testenv so that client-go is
// linked only into the test binaries that need it.
//
// One server is started per test binary, on the first Start, and shared by
// every test in it (a cold start takes several seconds); tests keep apart by
// using their own namespaces. The servers are stopped by their PIDs, and
// their directory removed, when the test binary exits, however it exits: a
// small reaper shell holds a pipe from the test binary and stops them when
// that pipe closes. Without the binaries a test is skipped (failed under
// CI=true) with a message naming tools/build.sh.
package kubeenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/attache-proxy/attache/internal/testenv"
)

// Kube is a running API server. All fields are set by Start; they are shared
// by the tests of one binary and must not be changed.
type Kube struct {
	URL        string       // https://127.0.0.1:PORT
	CAFile     string       // PEM CA that signed the serving cert (SANs 127.0.0.1, localhost)
	AdminToken string       // static token in group system:masters
	Config     *rest.Config // admin, verified TLS
	Client     kubernetes.Interface

	dir string // certificates, keys, logs and etcd's data
}

// minTokenTTL is the shortest expiry the TokenRequest API accepts.
const minTokenTTL = 10 * time.Minute

// server is the one per test binary. Its reaper's stdin must stay referenced
// for the life of the binary: when it is closed (or collected) the reaper
// stops the servers.
var server struct {
	once   sync.Once
	kube   *Kube
	err    error
	reaper io.WriteCloser
}

// Start returns the test binary's API server, starting it on the first call.
// It skips t (fails it under CI=true) when kube-apiserver or etcd is not
// installed, and fails t when the server does not come up, with its log.
func Start(t testing.TB) *Kube {
	t.Helper()
	apiserver, etcd := binary(t, "kube-apiserver"), binary(t, "etcd")
	server.once.Do(func() { server.kube, server.err = start(apiserver, etcd) })
	if server.err != nil {
		t.Fatalf("kubeenv: %v", server.err)
	}
	return server.kube
}

// binary finds a server binary in $ATTACHE_TOOLS/bin, else
// $HOME/.cache/attache-tools/bin (where tools/build.sh puts it), else PATH.
func binary(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(os.Getenv("HOME"), ".cache", "attache-tools", "bin")
	if d := os.Getenv("ATTACHE_TOOLS"); d != "" {
		dir = filepath.Join(d, "bin")
	}
	if p := filepath.Join(dir, name); isExec(p) {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	testenv.Unavailable(t, "%s not found in %s or PATH: build it with tools/build.sh (a cold build takes 10-25 minutes)", name, dir)
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// start runs etcd and kube-apiserver and waits until the API server is
// ready. It reports errors instead of failing a test: its result is shared
// by every test of the binary.
func start(apiserverBin, etcdBin string) (*Kube, error) {
	dir, err := os.MkdirTemp("", "attache-kube-")
	if err != nil {
		return nil, err
	}
	k := &Kube{dir: dir, AdminToken: randomHex(16)}
	fail := func(err error) (*Kube, error) {
		return nil, fmt.Errorf("%w\n--- etcd.log (tail) ---\n%s\n--- kube-apiserver.log (tail) ---\n%s",
			err, tail(filepath.Join(dir, "etcd.log")), tail(filepath.Join(dir, "kube-apiserver.log")))
	}
	if err := k.writeFiles(); err != nil {
		return fail(err)
	}
	etcdClient, etcdPeer, secure := freePort(), freePort(), freePort()
	if etcdClient == "" || etcdPeer == "" || secure == "" {
		return fail(fmt.Errorf("no free loopback port"))
	}
	etcd := exec.Command(etcdBin, "--name", "kubeenv", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://"+etcdClient, "--advertise-client-urls", "http://"+etcdClient,
		"--listen-peer-urls", "http://"+etcdPeer, "--initial-advertise-peer-urls", "http://"+etcdPeer,
		"--initial-cluster", "kubeenv=http://"+etcdPeer, "--unsafe-no-fsync", "--log-level=warn")
	_, port, _ := net.SplitHostPort(secure)
	f := func(name string) string { return filepath.Join(dir, name) }
	apiserver := exec.Command(apiserverBin,
		"--etcd-servers=http://"+etcdClient,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+port,
		"--tls-cert-file="+f("serving.crt"), "--tls-private-key-file="+f("serving.key"),
		"--cert-dir="+f("certs"),
		"--token-auth-file="+f("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+f("sa.pub"),
		"--service-account-signing-key-file="+f("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		// No controller creates the default ServiceAccount, and the default
		// endpoint reconciler refuses a loopback advertise address.
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		"--profiling=false", "--v=1")
	for _, c := range []struct {
		cmd *exec.Cmd
		log string
	}{{etcd, "etcd.log"}, {apiserver, "kube-apiserver.log"}} {
		logf, err := os.Create(f(c.log))
		if err != nil {
			return fail(err)
		}
		c.cmd.Stdout, c.cmd.Stderr = logf, logf
		if err := c.cmd.Start(); err != nil {
			return fail(fmt.Errorf("start %s: %w", c.cmd.Path, err))
		}
		logf.Close()
		go c.cmd.Wait() // reap it if it dies early; readiness below notices
		if server.reaper == nil {
			if server.reaper, err = startReaper(dir); err != nil {
				c.cmd.Process.Kill()
				return fail(err)
			}
		}
		// The reaper learns each PID as soon as it exists, so a test binary
		// killed during the start-up leaves nothing behind.
		fmt.Fprintln(server.reaper, strconv.Itoa(c.cmd.Process.Pid))
	}

	k.URL = "https://" + secure
	k.Config = &rest.Config{
		Host:            k.URL,
		BearerToken:     k.AdminToken,
		TLSClientConfig: rest.TLSClientConfig{CAFile: k.CAFile},
		QPS:             100, Burst: 200, // tests create objects in bursts
		// No Timeout: it would cut watches; calls take contexts instead.
	}
	if k.Client, err = kubernetes.NewForConfig(k.Config); err != nil {
		return fail(err)
	}
	if err := k.waitReady(90 * time.Second); err != nil {
		return fail(err)
	}
	return k, nil
}

// startReaper starts a shell that reads PIDs, one a line, until its stdin
// closes (the test binary exited), then stops those processes (SIGTERM, then
// SIGKILL after 10s) and removes dir.
func startReaper(dir string) (io.WriteCloser, error) {
	const script = `
pids=
while read p; do pids="$pids $p"; done
kill -TERM $pids 2>/dev/null
i=0
while [ $i -lt 100 ] && kill -0 $pids 2>/dev/null; do sleep 0.1; i=$((i+1)); done
kill -KILL $pids 2>/dev/null
rm -rf "$1"
`
	cmd := exec.Command("/bin/sh", "-c", script, "kubeenv-reaper", dir)
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	go cmd.Wait()
	return w, nil
}

// waitReady polls /readyz with the admin token over verified TLS.
func (k *Kube) waitReady(within time.Duration) error {
	rt, err := rest.TransportFor(k.Config)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: rt, Timeout: 5 * time.Second}
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := hc.Get(k.URL + "/readyz")
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("%s: %s", resp.Status, b)
	}
	return fmt.Errorf("kube-apiserver at %s not ready after %v: %s", k.URL, within, last)
}

// writeFiles writes the CA, the serving certificate, the service-account
// signing key and the static token file into k.dir.
func (k *Kube) writeFiles() error {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kubeenv-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	saKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvKeyDER, _ := x509.MarshalECPrivateKey(srvKey)
	saKeyDER, _ := x509.MarshalECPrivateKey(saKey)
	saPubDER, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	k.CAFile = filepath.Join(k.dir, "ca.crt")
	for name, b := range map[string][]byte{
		"ca.crt":      pemOf("CERTIFICATE", caDER),
		"serving.crt": pemOf("CERTIFICATE", srvDER),
		"serving.key": pemOf("EC PRIVATE KEY", srvKeyDER),
		"sa.key":      pemOf("EC PRIVATE KEY", saKeyDER),
		"sa.pub":      pemOf("PUBLIC KEY", saPubDER),
		"tokens.csv":  []byte(k.AdminToken + `,kubeenv-admin,uid-kubeenv-admin,"system:masters"` + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(k.dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Token creates namespace and the service account if missing and returns a
// bound token for it from the TokenRequest API, valid for ttl (at least 10
// minutes: the API server refuses shorter ones).
func (k *Kube) Token(t testing.TB, namespace, serviceAccount string, ttl time.Duration) string {
	t.Helper()
	if ttl < minTokenTTL {
		t.Fatalf("kubeenv: token ttl %v is below the API server's minimum of %v", ttl, minTokenTTL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k.Namespace(t, namespace)
	_, err := k.Client.CoreV1().ServiceAccounts(namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubeenv: create service account %s/%s: %v", namespace, serviceAccount, err)
	}
	secs := int64(ttl / time.Second)
	tr, err := k.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubeenv: token for %s/%s: %v", namespace, serviceAccount, err)
	}
	return tr.Status.Token
}

// Namespace creates namespace if it is missing.
func (k *Kube) Namespace(t testing.TB, namespace string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := k.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubeenv: create namespace %s: %v", namespace, err)
	}
}

// Kubeconfig writes a kubeconfig file for the server with the given bearer
// token (the admin's when token is "") into dir and returns its path.
func (k *Kube) Kubeconfig(t testing.TB, dir, token string) string {
	t.Helper()
	if token == "" {
		token = k.AdminToken
	}
	p := filepath.Join(dir, "kubeconfig")
	body := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubeenv
  cluster: {server: %q, certificate-authority: %q}
users:
- name: test
  user: {token: %q}
contexts:
- name: kubeenv
  context: {cluster: kubeenv, user: test}
current-context: kubeenv
`, k.URL, k.CAFile, token)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Logs returns the tails of the etcd and kube-apiserver logs, for failure
// messages.
func (k *Kube) Logs() string {
	return "--- etcd.log (tail) ---\n" + tail(filepath.Join(k.dir, "etcd.log")) +
		"\n--- kube-apiserver.log (tail) ---\n" + tail(filepath.Join(k.dir, "kube-apiserver.log"))
}

// tail returns the last 40 lines of a file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer ln.Close()
	return ln.Addr().String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
