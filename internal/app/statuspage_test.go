package app

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// statusPageApp starts attache with a TLS listener, a cluster with a
// client certificate and a second listener, and returns it with the
// certificates' NotAfter.
func statusPageApp(t *testing.T) (h *harness, listenerNotAfter, clusterNotAfter time.Time, dir string) {
	t.Helper()
	backend, _ := echoServer(t, "b")
	dir = t.TempDir()
	ca := testenv.NewCA(t, "ca")
	ca.Files(t, dir, "127.0.0.1")
	ca.Files(t, dir, "app")
	h = start(t, yamlf(`
listeners:
  - name: web-in
    address: "127.0.0.1:0"
    cluster: backend
    tls: {cert_file: "${DIR}/127.0.0.1.crt", key_file: "${DIR}/127.0.0.1.key"}
  - name: db-out
    address: "127.0.0.2:0"
    cluster: upstream-tls
clusters:
  - {name: backend, endpoints: ["%s"]}
  - name: upstream-tls
    endpoints: ["%s"]
    tls: {ca_file: "${DIR}/ca.crt", cert_file: "${DIR}/app.crt", key_file: "${DIR}/app.key"}
`, backend, backend), map[string]string{"DIR": dir})
	h.waitReady()
	return h, notAfter(t, filepath.Join(dir, "127.0.0.1.crt")), notAfter(t, filepath.Join(dir, "app.crt")), dir
}

func notAfter(t *testing.T, file string) time.Time {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.NotAfter
}

// badReload writes a configuration that fails to load and waits until
// /status lists the failed reload; it returns the error text.
func badReload(t *testing.T, h *harness) string {
	t.Helper()
	h.rewrite("listeners: [{name: x, address: \"127.0.0.1:0\", cluster: nope}]\n")
	if code, body := h.admin("POST", "/reload"); code != 400 {
		t.Fatalf("POST /reload of a bad file: got %d %q, want 400", code, body)
	}
	var st Status
	eventually(t, 10*time.Second, "a failed reload in /status", func() bool {
		st = h.app.Status().(Status)
		return len(st.Reloads) > 0 && !st.Reloads[0].OK
	})
	return st.Reloads[0].Error
}

// TestStatusCertificatesAndReloads: /status lists the loaded listener and
// cluster client certificates with their NotAfter, /metrics has
// attache_tls_certificate_expiry_seconds for each, and a failed reload
// is kept, newest first, with its error.
func TestStatusCertificatesAndReloads(t *testing.T) {
	t.Parallel()
	h, lna, cna, dir := statusPageApp(t)
	_, body := h.admin("GET", "/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v", err)
	}
	want := []CertStatus{
		{Owner: "listener web-in", File: filepath.Join(dir, "127.0.0.1.crt"), NotAfter: lna},
		{Owner: "cluster upstream-tls", File: filepath.Join(dir, "app.crt"), NotAfter: cna},
	}
	if len(st.Certificates) != len(want) {
		t.Fatalf("certificates: got %+v, want %+v", st.Certificates, want)
	}
	for i, w := range want {
		if g := st.Certificates[i]; g.Owner != w.Owner || g.File != w.File || !g.NotAfter.Equal(w.NotAfter) {
			t.Errorf("certificate %d: got %+v, want %+v", i, g, w)
		}
		m := fmt.Sprintf(`attache_tls_certificate_expiry_seconds{file=%q,owner=%q}`, w.File, w.Owner)
		if got, wantV := h.metric(m), fmt.Sprint(w.NotAfter.Unix()); got != wantV && got != fmt.Sprintf("%g", float64(w.NotAfter.Unix())) {
			t.Errorf("%s: got %q, want %s", m, got, wantV)
		}
	}
	if len(st.Reloads) != 0 {
		t.Errorf("reloads before any: got %+v, want none", st.Reloads)
	}
	msg := badReload(t, h)
	if !strings.Contains(msg, "nope") {
		t.Errorf("reload error: got %q, want it to name the unknown cluster nope", msg)
	}
}

// TestReloadLogBounded: the reload log keeps the last reloadLogSize
// results, newest first.
func TestReloadLogBounded(t *testing.T) {
	var l reloadLog
	t0 := time.Unix(1000, 0)
	for i := range reloadLogSize + 3 {
		var err error
		if i%2 == 1 {
			err = fmt.Errorf("bad %d", i)
		}
		l.add(t0.Add(time.Duration(i)*time.Second), err)
	}
	got := l.last()
	if len(got) != reloadLogSize {
		t.Fatalf("kept: got %d, want %d", len(got), reloadLogSize)
	}
	last := reloadLogSize + 2
	if !got[0].At.Equal(t0.Add(time.Duration(last)*time.Second)) || got[0].OK != (last%2 == 0) {
		t.Errorf("newest: got %+v, want reload %d", got[0], last)
	}
	if first := got[len(got)-1]; !first.At.Equal(t0.Add(3*time.Second)) || first.Error != "bad 3" {
		t.Errorf("oldest kept: got %+v, want reload 3 with error bad 3", first)
	}
}

// chromium returns the path of a headless Chromium, or skips (fails under
// CI=true) without one.
func chromium(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium not installed (CI=true): apt-get install chromium")
		}
		t.Skip("chromium not installed: apt-get install chromium to run the browser test")
	}
	return p
}

// browse runs headless Chromium on url with extra flags and returns its
// standard output.
func browse(t *testing.T, bin, url string, flags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--disable-gpu", "--no-first-run", "--disable-extensions",
		"--user-data-dir=" + t.TempDir()}
	if os.Geteuid() == 0 {
		args = append(args, "--no-sandbox")
	}
	cmd := exec.CommandContext(ctx, bin, append(append(args, flags...), url)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", flags, err, stderr.String())
	}
	return string(out)
}

// TestStatusPageInBrowser loads GET / of a running attache in headless
// Chromium and checks what a person sees: listener and cluster names, an
// endpoint's health, a certificate, and the error of a failed reload. With
// ATTACHE_STATUS_SCREENSHOT set it also saves a screenshot there (how
// docs/status-page.png is made).
func TestStatusPageInBrowser(t *testing.T) {
	bin := chromium(t)
	h, _, _, _ := statusPageApp(t)
	msg := badReload(t, h)
	url := "http://" + h.app.AdminAddr() + "/"
	st := h.app.Status().(Status)
	dom := browse(t, bin, url, "--dump-dom")
	for _, want := range []string{"web-in", "db-out", "upstream-tls", "backend",
		">" + st.Clusters[0].Endpoints[0].State + "<", "listener web-in", "failed: " + firstLine(msg)} {
		if !strings.Contains(dom, want) {
			t.Errorf("page in chromium: %q missing from\n%s", want, dom)
		}
	}
	shot := filepath.Join(t.TempDir(), "status.png")
	if p := os.Getenv("ATTACHE_STATUS_SCREENSHOT"); p != "" {
		shot, _ = filepath.Abs(p)
	}
	browse(t, bin, url, "--screenshot="+shot, "--window-size=1100,1000", "--hide-scrollbars")
	if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
		t.Errorf("screenshot %s: got %v, want a PNG", shot, err)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
