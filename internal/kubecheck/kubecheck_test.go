package kubecheck

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attache-proxy/attache/internal/inject"
)

func load(t testing.TB, names ...string) []File {
	t.Helper()
	var files []File
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Name: n, Data: data})
	}
	return files
}

func lines(r Report) []string {
	var out []string
	for _, p := range r.Problems {
		out = append(out, p.String())
	}
	return out
}

// TestGood checks one good manifest per workload kind: no errors, the
// expected notes and warnings, and the sidecar found with its config.
func TestGood(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file   string
		config string
		want   []string
	}{
		{"good/deployment.yaml", "ConfigMap/web-attache key attache.yaml", nil},
		{"good/statefulset.yaml", "ConfigMap/db-attache key attache.yaml", nil},
		{"good/daemonset.yaml", "ConfigMap/agent-attache key attache.yaml", nil},
		{"good/job.yaml", "ConfigMap/job-attache key attache.yaml", nil},
		{"good/cronjob.yaml", "Secret/nightly-attache key attache.yaml", nil},
		{"good/replicaset.yaml", "ConfigMap/rs-attache key attache.yaml", nil},
		{"good/pod.yaml", "ConfigMap/pod-attache key config.yaml", []string{
			"good/pod.yaml: document 2 (Pod/classic): note: spec.containers[1]: a classic sidecar: attache gets SIGTERM together with the application and keeps accepting for drain_min (5s by default); a native sidecar (initContainers with restartPolicy: Always, Kubernetes 1.29+) is stopped after it (line 23)",
			"good/pod.yaml: document 2 (Pod/classic): warning: spec.containers[1].volumeMounts[0].subPath: the config is mounted with subPath, which the kubelet never updates: attache will not see a change until the pod restarts; mount the directory (line 28)",
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			r := Check(load(t, tc.file))
			if got := lines(r); !slices.Equal(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if len(r.Sidecars) != 1 || r.Sidecars[0].Config != tc.config {
				t.Errorf("sidecars %+v, want one with config %q", r.Sidecars, tc.config)
			}
		})
	}
}

// TestBad checks one bad manifest per check, with the exact messages.
func TestBad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"classic-job.yaml", []string{
			"bad/classic-job.yaml: document 2 (Job/once): spec.template.spec.containers[1]: a classic sidecar in a Job keeps running after the application exits, so the Job never completes; make it a native sidecar (initContainers with restartPolicy: Always) (line 20)",
		}},
		{"classic-drain.yaml", []string{
			"bad/classic-drain.yaml: document 2 (Deployment/web): warning: spec.template.spec.containers[1]: a classic sidecar with drain_min: 0s exits at SIGTERM when no connection is open, cutting the application's egress while it drains (line 20)",
			"bad/classic-drain.yaml: document 2 (Deployment/web): spec.template.spec.containers[1].restartPolicy: only init containers take restartPolicy (the API server refuses it here); move attache to initContainers for a native sidecar (line 22)",
		}},
		{"config-aliases.yaml", []string{
			"bad/config-aliases.yaml: document 1 (ConfigMap/cfg): data.attache.yaml: the configuration expands to more than 100000 YAML nodes through its aliases (line 5)",
		}},
		{"config-base64.yaml", []string{
			`bad/config-base64.yaml: document 1 (Secret/cfg): data.attache.yaml: clusters[0].balance: unknown policy "roundrobin" (line 4 of the value, which starts on line 5); did you mean "round_robin"?`,
		}},
		{"config-invalid.yaml", []string{
			`bad/config-invalid.yaml: document 1 (ConfigMap/cfg): data.attache.yaml: listeners[0].protocl: unknown field (line 7); did you mean "protocol"?`,
			`bad/config-invalid.yaml: document 1 (ConfigMap/cfg): data.attache.yaml: listeners[0].cluster: unknown cluster "d" (line 7); did you mean "c"?`,
			`bad/config-invalid.yaml: document 1 (ConfigMap/cfg): data.attache.yaml: clusters[0].balance: unknown policy "roundrobin" (line 9); did you mean "round_robin"?`,
		}},
		{"configmap-key.yaml", []string{
			`bad/configmap-key.yaml: document 2 (Pod/web): spec.initContainers[0].args[2]: the config is read from /etc/attache/config.yaml, but ConfigMap "cfg" (bad/configmap-key.yaml, document 1) has no key "config.yaml" (it has attache.yaml) (line 19)`,
		}},
		{"configmap-missing.yaml", []string{
			`bad/configmap-missing.yaml: document 1 (Deployment/web): spec.template.spec.volumes[0].configMap.name: ConfigMap "cfg" of namespace "shop" (there is one in namespace "default", bad/configmap-missing.yaml, document 2) is not in the given files, so the config (/etc/attache/attache.yaml) cannot be checked (line 15); give the file that holds it too (for a kustomization: kubectl kustomize DIR | attache validate -)`,
		}},
		{"env-unset.yaml", []string{
			"bad/env-unset.yaml: document 1 (ConfigMap/cfg): data.attache.yaml: listeners[0].address: environment variable PORT is not set (line 7)",
		}},
		{"file-unmounted.yaml", []string{
			`bad/file-unmounted.yaml: document 2 (Pod/web): spec.initContainers[0].volumeMounts: listeners[1].postgres.auth.users_file is "users.txt", a relative path: give an absolute path on a volume (line 32)`,
			"bad/file-unmounted.yaml: document 2 (Pod/web): spec.initContainers[0].volumeMounts: listeners[0].tls.cert_file and listeners[0].tls.key_file name files in /etc/tls but nothing is mounted there (line 32)",
			"bad/file-unmounted.yaml: document 2 (Pod/web): spec.initContainers[0].volumeMounts: clusters[2].discovery.file.path names /srv/endpoints.yaml but nothing is mounted at /srv (line 32)",
		}},
		{"kustomize-escape.yaml", []string{
			`bad/kustomize-escape.yaml: document 1 (Kustomization/(no name)): configMapGenerator[0].files: "../../etc/passwd" is outside the kustomization's directory (kustomize refuses it too) (line 4)`,
			`bad/kustomize-escape.yaml: document 1 (Kustomization/(no name)): configMapGenerator[0].files: "/etc/hostname" is outside the kustomization's directory (kustomize refuses it too) (line 4)`,
		}},
		{"kustomize-rbac/", []string{ // with the kustomization's namespace applied
			`bad/kustomize-rbac/app.yaml: document 2 (Deployment/frontend): spec.template.spec.serviceAccountName: clusters[0].discovery.kubernetes watches EndpointSlices in namespace "shop", but what the files bind to ServiceAccount "frontend" (RoleBinding/slices (bad/kustomize-rbac/rbac.yaml, document 3)) does not allow list and watch on endpointslices (discovery.k8s.io) there (line 19)`,
		}},
		{"list-namespace.yaml", []string{
			`bad/list-namespace.yaml: document 1 (Deployment/web): items[1].spec.template.spec.volumes[0].configMap.name: ConfigMap "cfg" of namespace "staging" (there is one in namespace "prod", bad/list-namespace.yaml, document 1) is not in the given files, so the config (/etc/attache/attache.yaml) cannot be checked (line 22); give the file that holds it too (for a kustomization: kubectl kustomize DIR | attache validate -)`,
		}},
		{"mount-at-file.yaml", []string{
			"bad/mount-at-file.yaml: document 2 (Pod/web): spec.initContainers[0].args[2]: the config is read from /etc/attache/attache.yaml, but spec.initContainers[0].volumeMounts[0] mounts a volume there, which makes it a directory; mount the directory above it, or give subPath (line 19)",
		}},
		{"no-attache.yaml", []string{
			`bad/no-attache.yaml: no workload with an attache container (one named "attache", or running an attache image)`,
		}},
		{"no-config-arg.yaml", []string{
			"bad/no-config-arg.yaml: document 1 (Pod/web): spec.initContainers[0].args: attache run needs --config FILE (line 9)",
		}},
		{"no-mount.yaml", []string{
			"bad/no-mount.yaml: document 2 (Deployment/web): spec.template.spec.initContainers[0].volumeMounts: the config is read from /etc/attache/attache.yaml but nothing is mounted at /etc/attache (line 23)",
		}},
		{"no-mount-bad-config.yaml", []string{ // the config is found anyway, and checked
			`bad/no-mount-bad-config.yaml: document 1 (ConfigMap/web-attache): data.attache.yaml: clusters[0].balance: unknown policy "roundrobin" (line 17); did you mean "round_robin"?`,
			"bad/no-mount-bad-config.yaml: document 2 (Deployment/web): warning: spec.template.spec.initContainers[0]: no startupProbe: the application starts as soon as attache's process does, before its listeners are bound; probe /started (line 31)",
			"bad/no-mount-bad-config.yaml: document 2 (Deployment/web): spec.template.spec.initContainers[0].volumeMounts: the config is read from /etc/attache/attache.yaml but nothing is mounted at /etc/attache (line 37)",
		}},
		{"ports.yaml", []string{
			"bad/ports.yaml: document 2 (Pod/web): spec.containers[0].ports[0].containerPort: 7000 is also attache's listeners[0].address (127.0.0.1:7000): containers of a pod share its ports (line 23)",
			"bad/ports.yaml: document 2 (Pod/web): spec.containers[0].ports[1].containerPort: 9901 is also attache's admin.address (127.0.0.1:9901): containers of a pod share its ports (line 23)",
		}},
		{"probe-exec-admin.yaml", []string{
			"bad/probe-exec-admin.yaml: document 2 (Pod/web): spec.initContainers[0].startupProbe.exec.command: asks 127.0.0.1:9901, where nothing listens: the admin server is at 127.0.0.1:9911 and there is no probes.address (line 21)",
		}},
		{"probe-exec-path.yaml", []string{
			`bad/probe-exec-path.yaml: document 2 (Deployment/web): warning: spec.template.spec.initContainers[0].startupProbe.exec.command[0]: "attache" is looked up in PATH, which does not hold / where attache's image has the binary; use /attache (line 23)`,
		}},
		{"probe-exec-shell.yaml", []string{
			"bad/probe-exec-shell.yaml: document 2 (Pod/web): spec.initContainers[0].startupProbe.exec.command: want /attache probe ready|health|started [--admin ADDR]: the image has no shell or curl (line 21)",
		}},
		{"probe-liveness-ready.yaml", []string{
			"bad/probe-liveness-ready.yaml: document 2 (Pod/web): warning: spec.initContainers[0]: no startupProbe: the application starts as soon as attache's process does, before its listeners are bound; probe /started (line 17)",
			"bad/probe-liveness-ready.yaml: document 2 (Pod/web): warning: spec.initContainers[0].livenessProbe: a liveness probe on /ready restarts attache whenever a dependency is down; use /health (line 21)",
		}},
		{"probe-loopback.yaml", []string{
			"bad/probe-loopback.yaml: document 2 (Pod/web): spec.initContainers[0].startupProbe.httpGet: probes.address 127.0.0.1:9902 binds loopback only, but the kubelet probes the pod's IP; use 0.0.0.0:9902 (line 21)",
		}},
		{"probe-noserver.yaml", []string{
			"bad/probe-noserver.yaml: document 2 (Pod/web): spec.initContainers[0].startupProbe.httpGet: the config has no probes.address, so nothing serves this probe (the admin server is on loopback, which the kubelet cannot reach) (line 21)",
		}},
		{"probe-path.yaml", []string{
			`bad/probe-path.yaml: document 2 (Pod/web): spec.initContainers[0].startupProbe.httpGet.path: "/healthz": the probe server serves only /started, /ready and /health (line 21)`,
		}},
		{"probe-port.yaml", []string{
			"bad/probe-port.yaml: document 2 (Pod/web): spec.initContainers[0].startupProbe.httpGet.port: 9901, but the probe server listens on 0.0.0.0:9902 (probes.address) (line 21)",
		}},
		{"restart-policy.yaml", []string{
			"bad/restart-policy.yaml: document 2 (Pod/web): spec.initContainers[0].restartPolicy: an init container without restartPolicy: Always must exit before the next one starts, and attache runs until it is stopped, so the pod never starts; set restartPolicy: Always (a native sidecar, Kubernetes 1.29+) (line 18)",
		}},
		{"secret-key.yaml", []string{
			`bad/secret-key.yaml: document 3 (Pod/web): spec.initContainers[0].volumeMounts[0]: clusters[0].tls.ca_file names /etc/attache/ca.pem, but ConfigMap "cfg" (bad/secret-key.yaml, document 1) has no key "ca.pem" (it has attache.yaml) (line 32)`,
			`bad/secret-key.yaml: document 3 (Pod/web): spec.initContainers[0].volumeMounts[1]: listeners[0].tls.key_file and clusters[0].tls.key_file name /etc/tls/tls.key, but Secret "tls" (bad/secret-key.yaml, document 2) has no key "tls.key" (it has tls.crt) (line 33)`,
		}},
		{"token-pod.yaml", []string{
			"bad/token-pod.yaml: document 2 (Pod/web): spec.automountServiceAccountToken: false, and the attache container mounts nothing at /var/run/secrets/kubernetes.io/serviceaccount, but clusters[0].kubernetes_api reads the service-account token there; mount a projected token volume in the attache container (attache inject does) (line 18)",
		}},
		{"token-sa.yaml", []string{
			`bad/token-sa.yaml: document 3 (Pod/web): spec.serviceAccountName: ServiceAccount "reader" (bad/token-sa.yaml, document 2) has automountServiceAccountToken: false, and neither the pod sets it true nor the attache container mounts anything at /var/run/secrets/kubernetes.io/serviceaccount, but clusters[0].kubernetes_api reads the service-account token there (line 23)`,
		}},
		{"token-zone.yaml", []string{
			"bad/token-zone.yaml: document 2 (Pod/web): spec.automountServiceAccountToken: false, and the attache container mounts nothing at /var/run/secrets/kubernetes.io/serviceaccount, but zone.node_label reads the service-account token there; mount a projected token volume in the attache container (attache inject does) (line 16)",
		}},
		{"volume-missing.yaml", []string{
			`bad/volume-missing.yaml: document 2 (Pod/web): spec.initContainers[0].volumeMounts[1].name: no volume "certs" in spec.volumes (line 21)`,
		}},
		{"yaml.yaml", []string{
			"bad/yaml.yaml: document 2: invalid YAML: did not find expected node content (line 7)",
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			names := []string{"bad/" + tc.file}
			if strings.HasSuffix(tc.file, "/") { // a directory: every file in it
				paths, _ := filepath.Glob(filepath.Join("testdata", "bad", tc.file, "*.yaml"))
				names = nil
				for _, p := range paths {
					names = append(names, strings.TrimPrefix(p, "testdata/"))
				}
			}
			r := Check(load(t, names...))
			if got := lines(r); !slices.Equal(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestAcrossFiles finds the ConfigMap in another file than the workload.
func TestAcrossFiles(t *testing.T) {
	t.Parallel()
	r := Check([]File{
		{Name: "pod.yaml", Data: []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers:\n  - {name: attache, image: attache:dev, restartPolicy: Always, args: [run, --config, /c/a.yaml], startupProbe: {exec: {command: [/attache, probe, started]}}, volumeMounts: [{name: c, mountPath: /c}]}\n  containers: [{name: app, image: app}]\n  volumes: [{name: c, configMap: {name: cm}}]\n")},
		{Name: "cm.yaml", Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata:\n  a.yaml: |\n    listeners: [{name: l, address: '127.0.0.1:1', cluster: x}]\n")},
	})
	want := []string{`cm.yaml: document 1 (ConfigMap/cm): data.a.yaml: listeners[0].cluster: unknown cluster "x" (line 6)`}
	if got := lines(r); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(r.Sidecars) != 1 || r.Sidecars[0].Config != "ConfigMap/cm key a.yaml" || r.Errors() != 1 {
		t.Errorf("sidecars %+v, errors %d", r.Sidecars, r.Errors())
	}
}

// TestFileFields pins the configuration fields that name files: a new
// one is checked for a volume by its name alone (…_file), and shows up
// here.
func TestFileFields(t *testing.T) {
	t.Parallel()
	want := []string{
		"listeners[].tls.cert_file", "listeners[].tls.key_file", "listeners[].tls.client_ca_file",
		"listeners[].postgres.auth.users_file",
		"listeners[].postgres.client_tls.cert_file", "listeners[].postgres.client_tls.key_file", "listeners[].postgres.client_tls.ca_file",
		"clusters[].discovery.kubernetes.kubeconfig", "clusters[].discovery.consul.ca_file", "clusters[].discovery.file.path",
		"clusters[].tls.ca_file", "clusters[].tls.cert_file", "clusters[].tls.key_file",
		"clusters[].credentials.bearer_token_file", "clusters[].credentials.basic.password_file",
		"clusters[].kubernetes_api.token_file", "clusters[].kubernetes_api.ca_file",
		"zone.kubeconfig",
		"listeners[].http.routes[].grpc_transcode.descriptor_set_file",
		"clusters[].postgres.server_tls.cert_file", "clusters[].postgres.server_tls.key_file", "clusters[].postgres.server_tls.ca_file",
	}
	got := fileFieldPaths()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// TestInjectOutput checks what attache inject writes: every workload kind
// it handles, native sidecars, httpGet and exec probes, the token volume.
func TestInjectOutput(t *testing.T) {
	t.Parallel()
	inputs, _ := filepath.Glob("../inject/testdata/*.in.yaml")
	if len(inputs) == 0 {
		t.Fatal("no inject inputs")
	}
	for _, cfg := range []string{
		"probes: {address: \"0.0.0.0:9902\"}\nlisteners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]\n",
		"admin: {address: \"127.0.0.1:9911\"}\nlisteners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, cluster: k}]\nclusters: [{name: k, kubernetes_api: {}}]\n",
	} {
		facts, err := inject.ReadConfig([]byte(cfg))
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range inputs {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := inject.Inject(bytes.NewReader(data), &out, inject.Options{Image: "attache:dev", Config: []byte(cfg), Facts: facts}); err != nil {
				t.Fatalf("%s: %v", in, err)
			}
			r := Check([]File{{Name: in, Data: out.Bytes()}})
			var got []string
			for _, p := range r.Problems {
				// A livenessProbe is the user's, kept by inject as written:
				// it may not fit a configuration chosen here.
				if !strings.Contains(p.Path, ".livenessProbe") {
					got = append(got, p.String())
				}
			}
			if len(got) > 0 || len(r.Sidecars) == 0 {
				t.Errorf("%s: sidecars %d, problems:\n%s\n%s", in, len(r.Sidecars), strings.Join(got, "\n"), out.String())
			}
		}
	}
}

// TestDeployManifests checks the manifests shipped in deploy/kubernetes
// together, as `attache validate deploy/kubernetes/*.yaml
// deploy/kubernetes/*/*.yaml` does: no errors.
func TestDeployManifests(t *testing.T) {
	t.Parallel()
	var files []File
	for _, glob := range []string{"../../deploy/kubernetes/*.yaml", "../../deploy/kubernetes/*/*.yaml"} {
		names, _ := filepath.Glob(glob)
		for _, n := range names {
			data, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			if IsManifest(data) {
				files = append(files, File{Name: strings.TrimPrefix(n, "../../"), Data: data})
			}
		}
	}
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/kubernetes")
	}
	r := Check(files)
	for _, p := range r.Problems {
		if p.Severity == Error {
			t.Error(p)
		} else {
			t.Log(p)
		}
	}
}

// TestNearest: two kustomization directories with a ConfigMap of the same
// name; each workload is checked against the one beside it.
func TestNearest(t *testing.T) {
	t.Parallel()
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers:\n  - {name: attache, image: attache:dev, restartPolicy: Always, args: [run, --config, /c/a.yaml], startupProbe: {exec: {command: [/attache, probe, started]}}, volumeMounts: [{name: c, mountPath: /c}]}\n  containers: [{name: app, image: app}]\n  volumes: [{name: c, configMap: {name: cm}}]\n"
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata:\n  a.yaml: |\n    listeners: [{name: l, address: '127.0.0.1:1', cluster: %s}]\n    clusters: [{name: c, endpoints: ['h:1']}]\n"
	files := []File{
		{Name: "a/cm.yaml", Data: []byte(strings.Replace(cm, "%s", "x", 1))},
		{Name: "b/cm.yaml", Data: []byte(strings.Replace(cm, "%s", "c", 1))},
		{Name: "b/pod.yaml", Data: []byte(pod)},
	}
	if got := lines(Check(files)); len(got) > 0 {
		t.Errorf("b alone: %q", got)
	}
	files = append(files, File{Name: "a/pod.yaml", Data: []byte(pod)})
	want := []string{`a/cm.yaml: document 1 (ConfigMap/cm): data.a.yaml: listeners[0].cluster: unknown cluster "x" (line 6); did you mean "c"?`}
	if got := lines(Check(files)); !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// TestKustomize reads a kustomization's configMapGenerator: the ConfigMap
// made of attache.yaml and users.txt, problems in attache.yaml at its own
// lines.
func TestKustomize(t *testing.T) {
	t.Parallel()
	read := func(dir string) []File {
		var files []File
		for _, n := range []string{"kustomization.yaml", "deployment.yaml"} {
			p := filepath.Join("testdata", "kustomize", dir, n)
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, File{Name: p, Data: data})
		}
		return files
	}
	r := Check(read("good"))
	if got := lines(r); len(got) > 0 || len(r.Sidecars) != 1 || r.Sidecars[0].Config != "ConfigMap/web-attache key attache.yaml" {
		t.Errorf("good: sidecars %+v, problems %q", r.Sidecars, got)
	}
	want := []string{
		`testdata/kustomize/bad/attache.yaml: listeners[0].cluster: unknown cluster "pgg" (line 6); did you mean "pg"?`,
		`testdata/kustomize/bad/deployment.yaml: document 1 (Deployment/web): spec.template.spec.initContainers[0].volumeMounts[0]: listeners[0].postgres.auth.users_file names /etc/attache/users.txt, but ConfigMap "web-attache" (generated by testdata/kustomize/bad/kustomization.yaml, document 1) has no key "users.txt" (it has attache.yaml) (line 13)`,
	}
	if got := lines(Check(read("bad"))); !slices.Equal(got, want) {
		t.Errorf("bad: got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	gen := GeneratedFrom(read("good"))
	if wantGen := []string{"testdata/kustomize/good/attache.yaml", "testdata/kustomize/good/users.txt"}; !slices.Equal(gen, wantGen) {
		t.Errorf("GeneratedFrom: got %q, want %q", gen, wantGen)
	}
}
