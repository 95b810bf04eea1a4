package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateManifests runs attache validate on manifests end to end: a
// good one across two files, a bad one, a configuration file among
// manifests, and stdin.
func TestValidateManifests(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cm := write("cm.yaml", `apiVersion: v1
kind: ConfigMap
metadata: {name: web-attache}
data:
  attache.yaml: |
    probes: {address: "0.0.0.0:9902"}
    listeners: [{name: db, address: "127.0.0.1:5432", cluster: db}]
    clusters: [{name: db, endpoints: ["db:5432"]}]
`)
	deploy := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers:
        - name: attache
          image: attache:dev
          restartPolicy: Always
          args: [run, --config, /etc/attache/attache.yaml]
          startupProbe: {httpGet: {path: /started, port: 9902}}
          volumeMounts: [{name: cfg, mountPath: MOUNT}]
      containers: [{name: app, image: app:1}]
      volumes: [{name: cfg, configMap: {name: web-attache}}]
`
	good := write("deploy.yaml", strings.Replace(deploy, "MOUNT", "/etc/attache", 1))
	bad := write("bad.yaml", strings.Replace(deploy, "MOUNT", "/etc/config", 1))
	cfg := write("attache.yaml", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]\n")

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		err := Run(context.Background(), append([]string{"validate"}, args...), &out, &errb)
		return ExitCode(err, &errb), out.String(), errb.String()
	}

	code, out, errs := run(good, cm, cfg)
	if code != 0 {
		t.Fatalf("good: exit %d\n%s", code, errs)
	}
	for _, want := range []string{
		good + ": document 1 (Deployment/web): spec.template.spec.initContainers[0]: ok (config from ConfigMap/web-attache key attache.yaml)\n",
		cfg + ": ok (1 listeners, 1 clusters)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}

	code, _, errs = run(bad, cm, "--config", cfg)
	if code != 1 {
		t.Errorf("bad: exit %d, want 1", code)
	}
	want := bad + ": document 1 (Deployment/web): spec.template.spec.initContainers[0].volumeMounts: the config is read from /etc/attache/attache.yaml but nothing is mounted at /etc/attache (line 13)\n" +
		"attache validate: 1 error, 0 warnings, 0 notes\n"
	if errs != want {
		t.Errorf("bad: stderr\n%s\nwant\n%s", errs, want)
	}

	// Warnings alone pass.
	warn := write("warn.yaml", strings.Replace(strings.Replace(deploy, "MOUNT", "/etc/attache", 1), "startupProbe: {httpGet: {path: /started, port: 9902}}", "readinessProbe: {httpGet: {path: /ready, port: 9902}}", 1))
	code, out, errs = run(warn, cm)
	if code != 0 || !strings.HasSuffix(errs, "attache validate: 0 errors, 1 warning, 0 notes\n") || !strings.Contains(out, ": ok (config from ConfigMap/web-attache key attache.yaml)") {
		t.Errorf("warnings: exit %d\n%s%s", code, out, errs)
	}

	// The ConfigMap is not given: an error that says how to give it.
	code, _, errs = run(good)
	if code != 1 || !strings.Contains(errs, `ConfigMap "web-attache" is not in the given files`) {
		t.Errorf("no ConfigMap: exit %d\n%s", code, errs)
	}

	// stdin: kubectl kustomize DIR | attache validate -
	data, _ := os.ReadFile(good)
	cmData, _ := os.ReadFile(cm)
	stdin := write("stdin", string(cmData)+"---\n"+string(data))
	f, err := os.Open(stdin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	saved := os.Stdin
	os.Stdin = f
	code, out, errs = run("-")
	os.Stdin = saved
	if code != 0 || !strings.Contains(out, "stdin: document 2 (Deployment/web)") {
		t.Errorf("stdin: exit %d\n%s%s", code, out, errs)
	}
}

// TestValidateKustomize: a configuration file that a kustomization's
// configMapGenerator reads is checked as the ConfigMap's content, where the
// files it names are mounted, not as a file of this machine.
func TestValidateKustomize(t *testing.T) {
	files, _ := filepath.Glob("../kubecheck/testdata/kustomize/good/*.yaml")
	if len(files) != 3 {
		t.Fatalf("files %q", files)
	}
	var out, errb bytes.Buffer
	err := Run(context.Background(), append([]string{"validate"}, files...), &out, &errb)
	if code := ExitCode(err, &errb); code != 0 || !strings.Contains(out.String(), "ok (config from ConfigMap/web-attache key attache.yaml)") {
		t.Errorf("exit %d\n%s%s", code, out.String(), errb.String())
	}
}
