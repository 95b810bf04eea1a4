package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attache-proxy/attache/internal/testenv"
)

// TestValidateMatchSAN: attache validate refuses match_san where no peer
// certificate is verified, and malformed entries, naming field and line.
func TestValidateMatchSAN(t *testing.T) {
	dir := t.TempDir()
	caFile, crt, key := testenv.NewCA(t, "ca").Files(t, dir, "127.0.0.1")
	file := filepath.Join(dir, "attache.yaml")
	os.WriteFile(file, []byte(`listeners:
  - name: in
    address: "127.0.0.1:7000"
    cluster: c
    tls:
      cert_file: `+crt+`
      key_file: `+key+`
      client_ca_file: `+caFile+`
      match_san:
        - uri: spiffe://cluster.local/ns/shop/sa/frontend
clusters:
  - name: c
    endpoints: ["h:1"]
    tls:
      match_san:
        - uri_prefix: spiffe://cluster.local/ns/shop
        - {dns: a.b, ip: 10.0.0.1}
`), 0o644)
	var out, errb bytes.Buffer
	err := Run(context.Background(), []string{"validate", "--config", file}, &out, &errb)
	if code := ExitCode(err, &errb); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"3 problem(s)",
		"listeners[0].tls.match_san: needs require_client_cert: true (and client_ca_file): without a verified client certificate there is no name to match (line 10)",
		`clusters[0].tls.match_san[0].uri_prefix: "spiffe://cluster.local/ns/shop": must end with "/"`,
		"(line 16)",
		"clusters[0].tls.match_san[1]: give exactly one of dns, uri, uri_prefix or ip (line 17)",
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
}
