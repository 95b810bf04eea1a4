package kubecheck

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzCheck feeds untrusted YAML to the manifest reader and every check:
// no panic, no endless loop (aliases, deep nesting), and every Problem
// names the file and a severity it knows.
func FuzzCheck(f *testing.F) {
	names, _ := filepath.Glob("testdata/*/*.yaml")
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &a [*a, *a]\nkind: List\napiVersion: v1\nitems: [*a]\n"))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nspec: {initContainers: [{name: attache, args: [run, --config=/a/b], volumeMounts: [{name: v, mountPath: /a}]}], volumes: [{name: v, projected: {sources: [{configMap: {name: c}}]}}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {b: \"listeners: [{address: ${X:-1}}]\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		IsManifest(data)
		r := Check([]File{{Name: "f.yaml", Data: data}})
		for _, p := range r.Problems {
			if p.File != "f.yaml" || p.Severity < Error || p.Severity > Note || p.Msg == "" {
				t.Fatalf("bad problem %+v", p)
			}
			_ = p.String()
		}
	})
}
