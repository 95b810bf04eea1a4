package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/testenv/kubeenv"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the current output")

const testImage = "attache:v1.2.3"

// goldenCase is testdata/NAME.in.yaml injected with opts into
// testdata/NAME.out.yaml.
type goldenCase struct {
	name string
	opts Options
	cfg  string // testdata file read as --config; "" for none
}

var goldenCases = []goldenCase{
	{name: "deployment"},
	{name: "statefulset"},
	{name: "daemonset"},
	{name: "job"},
	{name: "cronjob"},
	{name: "pod"},
	{name: "multidoc"},
	{name: "list"},
	{name: "injected"},
	{name: "flow"},
	{name: "moved"},
	{name: "replicaset"},
	{name: "kept"},
	{name: "classic", opts: Options{Classic: true}},
	{name: "config", opts: Options{ConfigMap: "api-attache"}, cfg: "config.attache.yaml"},
}

func (c goldenCase) options(t *testing.T) Options {
	t.Helper()
	o := c.opts
	o.Image = testImage
	if c.cfg != "" {
		data, err := os.ReadFile(filepath.Join("testdata", c.cfg))
		if err != nil {
			t.Fatal(err)
		}
		if o.Facts, err = ReadConfig(data); err != nil {
			t.Fatalf("ReadConfig: %v", err)
		}
		o.Config = data
	}
	return o
}

func run(t *testing.T, in []byte, o Options) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := Inject(bytes.NewReader(in), &out, o); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	return out.Bytes()
}

// TestGolden compares each case's output with its golden file, and checks
// that injecting the output again changes nothing.
func TestGolden(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			o := c.options(t)
			in, err := os.ReadFile(filepath.Join("testdata", c.name+".in.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			got := run(t, in, o)
			golden := filepath.Join("testdata", c.name+".out.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
			again := run(t, got, o)
			if !bytes.Equal(again, got) {
				t.Errorf("second injection: got\n%s\nwant\n%s", again, got)
			}
		})
	}
}

// TestCommentsSurvive names the comments of deployment.in.yaml that must
// be in its output.
func TestCommentsSurvive(t *testing.T) {
	in, err := os.ReadFile("testdata/deployment.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := string(run(t, in, Options{Image: testImage}))
	for _, want := range []string{"# The web front end.", "# flow style stays", "# the application", "# pinned"} {
		if !strings.Contains(got, want) {
			t.Errorf("got\n%s\nwant it to contain %q", got, want)
		}
	}
}

// TestReadConfigRefusesBadConfig checks that a configuration with errors
// is refused with config.Errors naming the field.
func TestReadConfigRefusesBadConfig(t *testing.T) {
	_, err := ReadConfig([]byte("listeners:\n  - name: x\n    adress: 127.0.0.1:1\n"))
	errs, ok := err.(config.Errors)
	if !ok || len(errs) == 0 {
		t.Fatalf("got %v, want config.Errors", err)
	}
	if !strings.Contains(errs.Error(), "adress") {
		t.Errorf("got %v, want an error naming adress", errs)
	}
}

// TestFacts checks what ReadConfig takes from a configuration.
func TestFacts(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		want      Facts
	}{
		{"default admin", "listeners: [{name: a, address: 127.0.0.1:1, cluster: c}]\nclusters: [{name: c, endpoints: [\"127.0.0.1:2\"]}]\n", Facts{}},
		{"admin elsewhere", "admin: {address: 127.0.0.1:9911}\nlisteners: [{name: a, address: 127.0.0.1:1, cluster: c}]\nclusters: [{name: c, endpoints: [\"127.0.0.1:2\"]}]\n", Facts{Admin: "127.0.0.1:9911"}},
		{"probe server", "probes: {address: 0.0.0.0:9902}\nlisteners: [{name: a, address: 127.0.0.1:1, cluster: c}]\nclusters: [{name: c, endpoints: [\"127.0.0.1:2\"]}]\n", Facts{ProbePort: 9902}},
		{"probe port from the environment", "probes: {address: \"0.0.0.0:${ATTACHE_INJECT_TEST_PORT:-9903}\"}\nlisteners: [{name: a, address: 127.0.0.1:1, cluster: c}]\nclusters: [{name: c, endpoints: [\"127.0.0.1:2\"]}]\n", Facts{ProbePort: 9903}},
		{"kubernetes discovery", "listeners: [{name: a, address: 127.0.0.1:1, cluster: c}]\nclusters: [{name: c, discovery: {kubernetes: {service: s, namespace: n, port: http}}}]\n", Facts{NeedsToken: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadConfig([]byte(tc.cfg))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestAPIServerAccepts creates every object of every golden output with
// dryRun=All on a real API server, whose validation knows native sidecars
// (restartPolicy only on init containers, probes on sidecars only, ...).
func TestAPIServerAccepts(t *testing.T) {
	k := kubeenv.Start(t)
	dyn, err := dynamic.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"default", "shop"} {
		k.Namespace(t, ns)
	}
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", c.name+".out.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			for i, obj := range objects(t, data) {
				gvk := obj.GroupVersionKind()
				ns := obj.GetNamespace()
				if ns == "" {
					ns = "default"
				}
				res := dyn.Resource(resourceOf(t, gvk)).Namespace(ns)
				if _, err := res.Create(context.Background(), obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
					t.Errorf("object %d (%s %s): got %v, want accepted", i, gvk.Kind, obj.GetName(), err)
				}
			}
		})
	}
}

// TestAPIServerRejectsProbesOnPlainInit shows that the dry run checks
// what TestAPIServerAccepts relies on: without restartPolicy: Always the
// sidecar is a plain init container, which may not have probes.
func TestAPIServerRejectsProbesOnPlainInit(t *testing.T) {
	k := kubeenv.Start(t)
	dyn, err := dynamic.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/pod.out.yaml")
	if err != nil {
		t.Fatal(err)
	}
	obj := objects(t, data)[0]
	inits, _, _ := unstructured.NestedSlice(obj.Object, "spec", "initContainers")
	delete(inits[0].(map[string]any), "restartPolicy")
	if err := unstructured.SetNestedSlice(obj.Object, inits, "spec", "initContainers"); err != nil {
		t.Fatal(err)
	}
	res := dyn.Resource(resourceOf(t, obj.GroupVersionKind())).Namespace("default")
	if _, err := res.Create(context.Background(), obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err == nil {
		t.Errorf("got accepted, want the API server to refuse probes on an init container without restartPolicy: Always")
	}
}

// objects splits a multi-document output into objects, Lists into their
// items.
func objects(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var y map[string]any
		if err := dec.Decode(&y); err != nil {
			break
		}
		// Through JSON, for the value types unstructured copies.
		j, err := json.Marshal(y)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(j, &m); err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "List" {
			items, _ := m["items"].([]any)
			for _, it := range items {
				out = append(out, &unstructured.Unstructured{Object: it.(map[string]any)})
			}
			continue
		}
		out = append(out, u)
	}
	return out
}

func resourceOf(t *testing.T, gvk schema.GroupVersionKind) schema.GroupVersionResource {
	t.Helper()
	plural := map[string]string{
		"Pod": "pods", "Service": "services", "ConfigMap": "configmaps",
		"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets",
		"ReplicaSet": "replicasets", "Job": "jobs", "CronJob": "cronjobs",
	}[gvk.Kind]
	if plural == "" {
		t.Fatalf("no resource for kind %s", gvk.Kind)
	}
	return gvk.GroupVersion().WithResource(plural)
}

// FuzzInject checks that no input makes Inject panic, on its own output
// either. (yaml.v3 prints some degenerate documents, such as a lone "!",
// as text it cannot read back, so a second run may return an error.)
func FuzzInject(f *testing.F) {
	for _, c := range goldenCases {
		if in, err := os.ReadFile(filepath.Join("testdata", c.name+".in.yaml")); err == nil {
			f.Add(in, c.opts.Classic)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, classic bool) {
		o := Options{Image: testImage, Classic: classic, Config: []byte("x: 1\n")}
		var out bytes.Buffer
		if err := Inject(bytes.NewReader(in), &out, o); err != nil {
			return
		}
		_ = Inject(bytes.NewReader(out.Bytes()), io.Discard, o)
	})
}
