package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInject: attache inject writes the manifest with the sidecar, emits
// the ConfigMap for --config, and refuses a bad configuration with its
// problems and exit code 1.
func TestInject(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "pod.yaml")
	os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: busybox}]\n"), 0o644)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("listeners: [{name: a, address: 127.0.0.1:1, cluster: c}]\nclusters: [{name: c, endpoints: [\"127.0.0.1:2\"]}]\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listeners: [{name: a, adress: 127.0.0.1:1}]\n"), 0o644)

	for _, tc := range []struct {
		name string
		args []string
		code int
		out  []string // substrings of stdout
		err  string   // substring of stderr
	}{
		{"default image", []string{"inject", manifest}, 0, []string{"image: attache:" + Version, "restartPolicy: Always", "name: attache-config"}, ""},
		{"flags", []string{"inject", manifest, "--image", "reg/attache:v9", "--configmap", "mine", "--classic"}, 0, []string{"image: reg/attache:v9", "name: mine"}, ""},
		{"config", []string{"inject", "--config", good, manifest}, 0, []string{"kind: ConfigMap", "attache.yaml: |"}, ""},
		{"bad config", []string{"inject", "--config", bad, manifest}, 1, nil, "adress"},
		{"no file", []string{"inject"}, 2, nil, "want one FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := Run(context.Background(), tc.args, &out, &errb)
			if code := ExitCode(err, &errb); code != tc.code {
				t.Fatalf("exit code: got %d, want %d (stderr %q)", code, tc.code, errb.String())
			}
			for _, want := range tc.out {
				if !strings.Contains(out.String(), want) {
					t.Errorf("stdout: got\n%s\nwant it to contain %q", out.String(), want)
				}
			}
			if !strings.Contains(errb.String(), tc.err) {
				t.Errorf("stderr: got %q, want it to contain %q", errb.String(), tc.err)
			}
		})
	}
}
