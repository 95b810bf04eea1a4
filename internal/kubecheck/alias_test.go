package kubecheck

import (
	"testing"

	"gopkg.in/yaml.v3"
)

// TestFileFieldsUnderAliases: a file field written under a key a protocol
// still accepts where it was (listeners[].routes for listeners[].http.routes)
// is found, as config.Parse reads it.
func TestFileFieldsUnderAliases(t *testing.T) {
	for _, doc := range []string{
		"listeners:\n  - name: l\n    protocol: http\n    routes:\n      - grpc_transcode: {descriptor_set_file: /d/x.pb}\n",
		"listeners:\n  - name: l\n    protocol: http\n    http:\n      routes:\n        - grpc_transcode: {descriptor_set_file: /d/x.pb}\n",
	} {
		var root yaml.Node
		if err := yaml.Unmarshal([]byte(doc), &root); err != nil {
			t.Fatal(err)
		}
		fs := readFields(&root, &envLookup{})
		f := fs.get("listeners[0].http.routes[0].grpc_transcode.descriptor_set_file")
		if f == nil || !f.file || f.value != "/d/x.pb" {
			t.Errorf("%q: got %+v, want the file field /d/x.pb", doc, f)
		}
	}
}
