package kubernetes_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/inject"
	"github.com/attache-proxy/attache/internal/protocols"
	"github.com/attache-proxy/attache/internal/testenv/kubeenv"
)

// scenarios are the seed scenarios that must each have a directory.
var scenarios = []string{
	"ab-split",
	"api-gateway",
	"consul-discovery",
	"external-api-circuit-breaker",
	"kube-api-ambassador",
	"mesh-mtls",
	"multi-protocol",
	"pgbouncer-pool",
	"pgpool-failover",
	"rabbitmq-failover",
	"tls-forward",
	"twemproxy-sharding",
}

// object is one document of a manifest file.
type object struct {
	file string // base name
	doc  int    // 1-based
	*unstructured.Unstructured
}

func (o object) String() string {
	return fmt.Sprintf("%s document %d (%s %s)", o.file, o.doc, o.GetKind(), o.GetName())
}

// scenario is one directory's files and objects.
type scenario struct {
	name    string
	files   []string // YAML files other than kustomization.yaml
	objects []object
	raw     map[string][]byte // file contents by base name
}

// load reads every directory next to this file.
func load(t *testing.T) []*scenario {
	t.Helper()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var out []*scenario
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || e.Name() == "testdata" {
			continue
		}
		s := &scenario{name: e.Name(), raw: map[string][]byte{}}
		files, err := os.ReadDir(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			n := f.Name()
			if f.IsDir() || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
				continue
			}
			data, err := os.ReadFile(filepath.Join(e.Name(), n))
			if err != nil {
				t.Fatal(err)
			}
			s.raw[n] = data
			if n == "kustomization.yaml" {
				continue
			}
			s.files = append(s.files, n)
			objs, err := decode(data)
			if err != nil {
				t.Fatalf("%s/%s: %v", s.name, n, err)
			}
			for i, u := range objs {
				s.objects = append(s.objects, object{file: n, doc: i + 1, Unstructured: u})
			}
		}
		out = append(out, s)
	}
	return out
}

// decode splits a multi-document file into objects.
func decode(data []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var y map[string]any
		err := dec.Decode(&y)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if y == nil {
			continue
		}
		// Through JSON, for the value types unstructured copies.
		j, err := json.Marshal(y)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(j, &m); err != nil {
			return nil, err
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

func (s *scenario) find(kind, name string) *object {
	for i := range s.objects {
		if o := &s.objects[i]; o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// TestLayout checks that every seed scenario has a directory, that every
// directory is a kustomization listing exactly its YAML files, and that
// README.md has a line for it.
func TestLayout(t *testing.T) {
	all := load(t)
	var names []string
	for _, s := range all {
		names = append(names, s.name)
	}
	if !slices.Equal(names, scenarios) {
		t.Errorf("scenario directories: got %q, want %q", names, scenarios)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		t.Run(s.name, func(t *testing.T) {
			k, ok := s.raw["kustomization.yaml"]
			if !ok {
				t.Fatal("no kustomization.yaml")
			}
			var kust struct {
				APIVersion string   `yaml:"apiVersion"`
				Kind       string   `yaml:"kind"`
				Resources  []string `yaml:"resources"`
			}
			if err := yaml.Unmarshal(k, &kust); err != nil {
				t.Fatalf("kustomization.yaml: %v", err)
			}
			if kust.Kind != "Kustomization" || kust.APIVersion != "kustomize.config.k8s.io/v1beta1" {
				t.Errorf("kustomization.yaml: kind %q, apiVersion %q", kust.Kind, kust.APIVersion)
			}
			listed := slices.Clone(kust.Resources)
			sort.Strings(listed)
			if !slices.Equal(listed, s.files) {
				t.Errorf("kustomization.yaml resources: got %q, want the directory's YAML files %q", listed, s.files)
			}
			// No credential is ever committed: every value of a Secret is
			// a marked placeholder.
			for _, o := range s.objects {
				if o.GetKind() != "Secret" {
					continue
				}
				data := map[string]string{}
				plain, _, _ := unstructured.NestedStringMap(o.Object, "stringData")
				for k, v := range plain {
					data[k] = v
				}
				enc, _, _ := unstructured.NestedStringMap(o.Object, "data")
				for k, v := range enc {
					b, _ := base64.StdEncoding.DecodeString(v)
					data[k] = string(b)
				}
				for k, v := range data {
					if !strings.Contains(v, "CHANGE-ME") && !strings.Contains(v, "PLACEHOLDER") {
						t.Errorf("%v: %s is not marked as a placeholder (CHANGE-ME or PLACEHOLDER)", o, k)
					}
				}
			}
			line := fmt.Sprintf("| [`%s/`](%s/) | ", s.name, s.name)
			i := bytes.Index(readme, []byte(line))
			if i < 0 {
				t.Errorf("README.md: no line starting %q", line)
			} else if rest, _, _ := strings.Cut(string(readme[i+len(line):]), "\n"); len(strings.TrimSuffix(rest, "|")) < 20 {
				t.Errorf("README.md: the line of %s says nothing: %q", s.name, rest)
			}
		})
	}
}

// sidecar is the attache container of a workload, with what it needs.
type sidecar struct {
	workload  object
	podSpec   map[string]any
	container map[string]any
	native    bool
	configMap *object // the ConfigMap mounted at the --config directory
	cfgFile   string  // the --config argument
}

var podSpecPath = map[string][]string{
	"Pod":         {"spec"},
	"Deployment":  {"spec", "template", "spec"},
	"StatefulSet": {"spec", "template", "spec"},
	"DaemonSet":   {"spec", "template", "spec"},
	"ReplicaSet":  {"spec", "template", "spec"},
	"Job":         {"spec", "template", "spec"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template", "spec"},
}

// sidecars finds the attache container of every workload of s, and fails
// for a workload without one.
func (s *scenario) sidecars(t *testing.T) []sidecar {
	t.Helper()
	var out []sidecar
	for _, o := range s.objects {
		p, ok := podSpecPath[o.GetKind()]
		if !ok {
			continue
		}
		spec, _, _ := unstructured.NestedMap(o.Object, p...)
		sc := sidecar{workload: o, podSpec: spec}
		for _, list := range []string{"initContainers", "containers"} {
			cs, _, _ := unstructured.NestedSlice(spec, list)
			for _, c := range cs {
				if m, _ := c.(map[string]any); m["name"] == inject.Name {
					sc.container, sc.native = m, list == "initContainers"
				}
			}
		}
		if sc.container == nil {
			t.Errorf("%v: no container named %s", o, inject.Name)
			continue
		}
		args := strs(sc.container["args"])
		if i := slices.Index(args, "--config"); i >= 0 && i+1 < len(args) {
			sc.cfgFile = args[i+1]
		}
		for _, m := range maps(sc.container["volumeMounts"]) {
			if m["mountPath"] != path.Dir(sc.cfgFile) {
				continue
			}
			if v := volume(spec, str(m["name"])); v != nil {
				if cm, ok := v["configMap"].(map[string]any); ok {
					sc.configMap = s.find("ConfigMap", str(cm["name"]))
				}
			}
		}
		out = append(out, sc)
	}
	if len(out) == 0 {
		t.Errorf("%s: no workload", s.name)
	}
	return out
}

// config is the attache configuration the sidecar reads, "" when its
// ConfigMap is missing.
func (sc sidecar) config() string {
	if sc.configMap == nil {
		return ""
	}
	v, _, _ := unstructured.NestedString(sc.configMap.Object, "data", path.Base(sc.cfgFile))
	return v
}

// TestWiring checks what makes the sidecar work in its pod: a native
// sidecar, the config mounted where --config points, probes on the probe
// server's port and paths, the hardening inject sets, and the
// service-account token mounted exactly when the configuration uses the
// Kubernetes API.
func TestWiring(t *testing.T) {
	for _, s := range load(t) {
		t.Run(s.name, func(t *testing.T) {
			for _, sc := range s.sidecars(t) {
				c := sc.container
				if !sc.native || c["restartPolicy"] != "Always" {
					t.Errorf("%v: attache is not a native sidecar (initContainers, restartPolicy: Always)", sc.workload)
				}
				if sc.cfgFile == "" {
					t.Errorf("%v: no --config argument in %q", sc.workload, strs(c["args"]))
				}
				if sc.configMap == nil {
					t.Fatalf("%v: no ConfigMap of this scenario is mounted at %s, the directory of --config %s", sc.workload, path.Dir(sc.cfgFile), sc.cfgFile)
				}
				text := sc.config()
				if text == "" {
					t.Fatalf("%v: ConfigMap %s has no key %s", sc.workload, sc.configMap.GetName(), path.Base(sc.cfgFile))
				}
				var cfg struct {
					Probes struct {
						Address string `yaml:"address"`
					} `yaml:"probes"`
					Clusters []struct {
						KubernetesAPI *yaml.Node `yaml:"kubernetes_api"`
						Discovery     struct {
							Kubernetes *struct {
								Kubeconfig string `yaml:"kubeconfig"`
							} `yaml:"kubernetes"`
						} `yaml:"discovery"`
					} `yaml:"clusters"`
				}
				if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
					t.Fatalf("%s: %v", sc.configMap, err)
				}
				_, port, err := net.SplitHostPort(cfg.Probes.Address)
				if err != nil {
					t.Fatalf("%s: probes.address %q: want the probe server, e.g. 0.0.0.0:9902", sc.configMap, cfg.Probes.Address)
				}
				for probe, want := range map[string]string{"startupProbe": "/started", "readinessProbe": "/ready"} {
					get, _, _ := unstructured.NestedMap(c, probe, "httpGet")
					if get == nil || get["path"] != want || fmt.Sprint(get["port"]) != port {
						t.Errorf("%v: %s: got %v, want httpGet %s on port %s", sc.workload, probe, c[probe], want, port)
					}
				}
				sec, _ := c["securityContext"].(map[string]any)
				caps, _ := sec["capabilities"].(map[string]any)
				if sec["runAsNonRoot"] != true || sec["readOnlyRootFilesystem"] != true || !slices.Contains(strs(caps["drop"]), "ALL") {
					t.Errorf("%v: securityContext %v: want runAsNonRoot, readOnlyRootFilesystem and drop ALL", sc.workload, sec)
				}
				if res, _ := c["resources"].(map[string]any); res["requests"] == nil || res["limits"] == nil {
					t.Errorf("%v: resources %v: want requests and limits", sc.workload, res)
				}
				needs := false
				for _, cl := range cfg.Clusters {
					if cl.KubernetesAPI != nil || (cl.Discovery.Kubernetes != nil && cl.Discovery.Kubernetes.Kubeconfig == "") {
						needs = true
					}
				}
				switch mounted := tokenMounted(sc); {
				case needs && !mounted:
					t.Errorf("%v: the configuration uses the Kubernetes API, but the service-account token is not mounted", sc.workload)
				case !needs && sc.podSpec["automountServiceAccountToken"] != false:
					t.Errorf("%v: nothing uses the Kubernetes API: want automountServiceAccountToken: false", sc.workload)
				}
			}
		})
	}
}

// tokenMounted reports whether the sidecar gets a service-account token:
// from the kubelet, or from a projected volume at the same place.
func tokenMounted(sc sidecar) bool {
	if sc.podSpec["automountServiceAccountToken"] != false {
		return true
	}
	for _, m := range maps(sc.container["volumeMounts"]) {
		if m["mountPath"] == config.DefaultServiceAccountDir {
			return true
		}
	}
	return false
}

// TestConfigsLoad loads every attache configuration with attache's own
// loader, as the sidecar would in its pod: every file the sidecar mounts
// is written under a temporary directory (a Secret's content as it is, a
// kubernetes.io/tls Secret as a new certificate, key and CA, since the
// manifests hold placeholders; the token the kubelet mounts), the paths
// of the configuration moved there, and the environment is the
// container's, Secrets resolved. A file the configuration names that no
// volume provides, or a ${VAR} the container does not set, fails.
func TestConfigsLoad(t *testing.T) {
	for _, s := range load(t) {
		t.Run(s.name, func(t *testing.T) {
			for _, sc := range s.sidecars(t) {
				if sc.config() == "" {
					t.Errorf("%v: no configuration mounted at --config", sc.workload)
					continue
				}
				text, env := inPod(t, s, sc)
				if _, err := config.Parse([]byte(text), lookup(env), protocols.Schemas()); err != nil {
					t.Errorf("%s: the attache configuration does not load:\n%v\nconfiguration as loaded:\n%s", sc.configMap, err, text)
				}
			}
		})
	}
}

// TestInjectIdempotent injects each workload again, with the image and
// ConfigMap it has and its configuration's facts: nothing may change.
func TestInjectIdempotent(t *testing.T) {
	for _, s := range load(t) {
		t.Run(s.name, func(t *testing.T) {
			seen := map[string]bool{}
			for _, sc := range s.sidecars(t) {
				if seen[sc.workload.file] || sc.configMap == nil {
					continue
				}
				seen[sc.workload.file] = true
				text, env := inPod(t, s, sc)
				for k, v := range env {
					t.Setenv(k, v)
				}
				facts, err := inject.ReadConfig([]byte(text))
				if err != nil {
					t.Fatalf("%s: %v", sc.configMap, err)
				}
				if sc.cfgFile != inject.ConfigDir+"/"+inject.ConfigKey {
					t.Errorf("%v: --config %s: inject mounts the configuration at %s/%s", sc.workload, sc.cfgFile, inject.ConfigDir, inject.ConfigKey)
				}
				in := s.raw[sc.workload.file]
				var out bytes.Buffer
				opts := inject.Options{Image: str(sc.container["image"]), ConfigMap: sc.configMap.GetName(), Facts: facts}
				if err := inject.Inject(bytes.NewReader(in), &out, opts); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out.Bytes(), in) {
					t.Errorf("%s/%s: attache inject --image %s --configmap %s changes it:\n%s", s.name, sc.workload.file, opts.Image, opts.ConfigMap, lineDiff(in, out.Bytes()))
				}
			}
		})
	}
}

// TestAPIServerAccepts creates every object of every scenario with
// dryRun=All in a namespace of its own on a real kube-apiserver, whose
// validation knows native sidecars, Secret types and RBAC.
func TestAPIServerAccepts(t *testing.T) {
	k := kubeenv.Start(t)
	dyn, err := dynamic.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	for _, s := range load(t) {
		t.Run(s.name, func(t *testing.T) {
			ns := fmt.Sprintf("manifests-%s-%d", s.name, time.Now().UnixNano()%1e6)
			if len(ns) > 63 {
				ns = ns[len(ns)-63:]
			}
			k.Namespace(t, ns)
			for _, o := range s.objects {
				u := o.DeepCopy()
				gvk := u.GroupVersionKind()
				m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				if err != nil {
					t.Errorf("%v: %v", o, err)
					continue
				}
				res := dyn.Resource(m.Resource)
				var ri dynamic.ResourceInterface = res
				if m.Scope.Name() == meta.RESTScopeNameNamespace {
					u.SetNamespace(ns)
					ri = res.Namespace(ns)
					subjects, _, _ := unstructured.NestedSlice(u.Object, "subjects")
					for _, sub := range subjects {
						if sm, _ := sub.(map[string]any); sm["kind"] == "ServiceAccount" {
							sm["namespace"] = ns
						}
					}
					if subjects != nil {
						unstructured.SetNestedSlice(u.Object, subjects, "subjects")
					}
				}
				if _, err := ri.Create(context.Background(), u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
					t.Errorf("%v: got %v, want accepted", o, err)
				}
			}
		})
	}
}

// inPod returns the sidecar's configuration with its file paths moved
// under a temporary directory that holds what the pod would mount there,
// and the environment the container would have.
func inPod(t *testing.T, s *scenario, sc sidecar) (text string, env map[string]string) {
	t.Helper()
	root := t.TempDir()
	text = withKubeAPIDefaults(t, sc.config())
	var olds []string
	mounts := maps(sc.container["volumeMounts"])
	for _, m := range mounts {
		mp, name := str(m["mountPath"]), str(m["name"])
		v := volume(sc.podSpec, name)
		if v == nil {
			t.Errorf("%v: volumeMount %s: no volume of that name", sc.workload, name)
			continue
		}
		files := volumeFiles(t, s, sc, v)
		dir := filepath.Join(root, mp)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, b := range files {
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		olds = append(olds, mp)
	}
	if tokenMounted(sc) && !slices.Contains(olds, config.DefaultServiceAccountDir) {
		// The kubelet's own mount.
		dir := filepath.Join(root, config.DefaultServiceAccountDir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, b := range serviceAccountFiles(t) {
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		olds = append(olds, config.DefaultServiceAccountDir)
	}
	// Longest first, so that a mount inside another wins; one pass.
	sort.Slice(olds, func(i, j int) bool { return len(olds[i]) > len(olds[j]) })
	var pairs []string
	for _, mp := range olds {
		mp = strings.TrimSuffix(mp, "/") + "/"
		pairs = append(pairs, mp, filepath.Join(root, mp)+"/")
	}
	text = strings.NewReplacer(pairs...).Replace(text)
	return text, containerEnv(t, s, sc)
}

// withKubeAPIDefaults writes the token_file and ca_file a kubernetes_api
// cluster defaults to, so that they move with the kubelet's mount like
// every other file.
func withKubeAPIDefaults(t *testing.T, text string) string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil || len(doc.Content) == 0 {
		return text
	}
	clusters := get(doc.Content[0], "clusters")
	if clusters == nil || clusters.Kind != yaml.SequenceNode {
		return text
	}
	changed := false
	for _, cl := range clusters.Content {
		k := get(cl, "kubernetes_api")
		if k == nil || k.Kind != yaml.MappingNode {
			continue
		}
		for key, file := range map[string]string{"token_file": "token", "ca_file": "ca.crt"} {
			if get(k, key) == nil {
				k.Content = append(k.Content,
					&yaml.Node{Kind: yaml.ScalarNode, Value: key},
					&yaml.Node{Kind: yaml.ScalarNode, Value: config.DefaultServiceAccountDir + "/" + file})
				changed = true
			}
		}
	}
	if !changed {
		return text
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// volumeFiles is what a volume puts in its mount directory.
func volumeFiles(t *testing.T, s *scenario, sc sidecar, v map[string]any) map[string][]byte {
	t.Helper()
	switch {
	case v["configMap"] != nil:
		cm := v["configMap"].(map[string]any)
		return pick(t, sc, "ConfigMap", str(cm["name"]), configMapData(s, str(cm["name"])), cm["items"])
	case v["secret"] != nil:
		sec := v["secret"].(map[string]any)
		return pick(t, sc, "Secret", str(sec["secretName"]), secretData(t, s, str(sec["secretName"])), sec["items"])
	case v["projected"] != nil:
		out := map[string][]byte{}
		sources, _, _ := unstructured.NestedSlice(v, "projected", "sources")
		for _, src := range sources {
			sm, _ := src.(map[string]any)
			switch {
			case sm["serviceAccountToken"] != nil:
				p := str(sm["serviceAccountToken"].(map[string]any)["path"])
				out[p] = serviceAccountFiles(t)["token"]
			case sm["configMap"] != nil:
				cm := sm["configMap"].(map[string]any)
				data := configMapData(s, str(cm["name"]))
				if str(cm["name"]) == "kube-root-ca.crt" { // published in every namespace
					data = map[string][]byte{"ca.crt": serviceAccountFiles(t)["ca.crt"]}
				}
				for f, b := range pick(t, sc, "ConfigMap", str(cm["name"]), data, cm["items"]) {
					out[f] = b
				}
			case sm["secret"] != nil:
				sec := sm["secret"].(map[string]any)
				for f, b := range pick(t, sc, "Secret", str(sec["name"]), secretData(t, s, str(sec["name"])), sec["items"]) {
					out[f] = b
				}
			case sm["downwardAPI"] != nil:
				items, _, _ := unstructured.NestedSlice(sm, "downwardAPI", "items")
				for _, it := range items {
					out[str(it.(map[string]any)["path"])] = []byte("default")
				}
			}
		}
		return out
	case v["emptyDir"] != nil:
		return nil
	}
	t.Errorf("%v: volume %s: a kind of volume this test does not know", sc.workload, v["name"])
	return nil
}

// pick applies a volume's items to data; nil data is a missing object.
func pick(t *testing.T, sc sidecar, kind, name string, data map[string][]byte, items any) map[string][]byte {
	t.Helper()
	if data == nil {
		t.Errorf("%v: mounts %s %s, which is not in the scenario", sc.workload, kind, name)
		return nil
	}
	if items == nil {
		return data
	}
	out := map[string][]byte{}
	for _, it := range maps(items) {
		b, ok := data[str(it["key"])]
		if !ok {
			t.Errorf("%v: %s %s has no key %s", sc.workload, kind, name, it["key"])
		}
		out[str(it["path"])] = b
	}
	return out
}

func configMapData(s *scenario, name string) map[string][]byte {
	o := s.find("ConfigMap", name)
	if o == nil {
		return nil
	}
	out := map[string][]byte{}
	data, _, _ := unstructured.NestedStringMap(o.Object, "data")
	for k, v := range data {
		out[k] = []byte(v)
	}
	return out
}

// secretData is a Secret's content: data decoded, stringData over it. A
// kubernetes.io/tls Secret gets a certificate, key and CA made here
// instead of its placeholders.
func secretData(t *testing.T, s *scenario, name string) map[string][]byte {
	t.Helper()
	o := s.find("Secret", name)
	if o == nil {
		return nil
	}
	out := map[string][]byte{}
	data, _, _ := unstructured.NestedStringMap(o.Object, "data")
	for k, v := range data {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Errorf("%v: data.%s: %v", o, k, err)
		}
		out[k] = b
	}
	sdata, _, _ := unstructured.NestedStringMap(o.Object, "stringData")
	for k, v := range sdata {
		out[k] = []byte(v)
	}
	if typ, _, _ := unstructured.NestedString(o.Object, "type"); typ == "kubernetes.io/tls" {
		for k, v := range issue(t) {
			if _, ok := out[k]; ok || k != "ca.crt" {
				out[k] = v
			}
		}
	}
	return out
}

// containerEnv is the environment of the sidecar: its env, Secret and
// ConfigMap references resolved from the scenario, and the variables the
// kubelet sets in every container.
func containerEnv(t *testing.T, s *scenario, sc sidecar) map[string]string {
	t.Helper()
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
	for _, e := range maps(sc.container["env"]) {
		name := str(e["name"])
		if v, ok := e["value"]; ok {
			env[name] = str(v)
			continue
		}
		from, _ := e["valueFrom"].(map[string]any)
		switch {
		case from["secretKeyRef"] != nil:
			ref := from["secretKeyRef"].(map[string]any)
			data := secretData(t, s, str(ref["name"]))
			v, ok := data[str(ref["key"])]
			if !ok {
				t.Errorf("%v: env %s: Secret %s with key %s is not in the scenario", sc.workload, name, ref["name"], ref["key"])
			}
			env[name] = string(v)
		case from["configMapKeyRef"] != nil:
			ref := from["configMapKeyRef"].(map[string]any)
			v, ok := configMapData(s, str(ref["name"]))[str(ref["key"])]
			if !ok {
				t.Errorf("%v: env %s: ConfigMap %s with key %s is not in the scenario", sc.workload, name, ref["name"], ref["key"])
			}
			env[name] = string(v)
		default:
			env[name] = "from-the-pod"
		}
	}
	return env
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// serviceAccountFiles is what the kubelet mounts for a service account.
func serviceAccountFiles(t *testing.T) map[string][]byte {
	t.Helper()
	tls := issue(t)
	return map[string][]byte{"token": []byte("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl"), "ca.crt": tls["ca.crt"], "namespace": []byte("default")}
}

// issue makes what cert-manager writes into a kubernetes.io/tls Secret: a
// certificate for a service signed by a new CA, its key, and the CA.
func issue(t *testing.T) map[string][]byte {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mesh-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "service"},
		DNSNames: []string{"service.test.svc.cluster.local"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"ca.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	}
}

func volume(spec map[string]any, name string) map[string]any {
	for _, v := range maps(spec["volumes"]) {
		if v["name"] == name {
			return v
		}
	}
	return nil
}

func maps(v any) []map[string]any {
	l, _ := v.([]any)
	var out []map[string]any
	for _, it := range l {
		if m, ok := it.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func strs(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, it := range l {
		out = append(out, str(it))
	}
	return out
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// lineDiff names the first line where a and b differ.
func lineDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: file has %q, inject writes %q", i+1, x, y)
		}
	}
	return "(same lines)"
}
