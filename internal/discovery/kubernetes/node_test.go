package kubernetes

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/attache-proxy/attache/internal/testenv/kubeenv"
)

// TestNodeLabelsOverHTTP: NewCoreClient and NodeLabels send GET
// /api/v1/nodes/<name> with the kubeconfig's token and read the labels of
// the API server's JSON (a full core/v1 Node).
func TestNodeLabelsOverHTTP(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/api/v1/nodes/node-7" {
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(&corev1.Node{
			TypeMeta:   metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: "node-7", Labels: map[string]string{"topology.kubernetes.io/zone": "us-east-1b"}},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.7"}}},
		})
	}))
	t.Cleanup(srv.Close)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\ncurrent-context: ctx\ncontexts:\n- name: ctx\n  context: {cluster: c, user: u}\n"+
		"clusters: [{name: c, cluster: {server: \""+srv.URL+"\"}}]\nusers: [{name: u, user: {}}]\n"), 0o600)
	client, err := NewCoreClient(kc)
	if err != nil {
		t.Fatal(err)
	}
	get := NodeLabels(client)
	labels, err := get(context.Background(), "node-7")
	if err != nil {
		t.Fatal(err)
	}
	if got := labels["topology.kubernetes.io/zone"]; got != "us-east-1b" {
		t.Errorf("zone label: got %q, want us-east-1b", got)
	}
	if _, err := get(context.Background(), "node-8"); err == nil {
		t.Error("a missing node gave no error")
	}
}

// TestNodeLabelsAgainstAPIServer reads a Node's labels from a real API
// server.
func TestNodeLabelsAgainstAPIServer(t *testing.T) {
	t.Parallel()
	k := kubeenv.Start(t)
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "attache-zone-node", Labels: map[string]string{"topology.kubernetes.io/zone": "zone-b"}}}
	if _, err := k.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Client.CoreV1().Nodes().Delete(context.Background(), node.Name, metav1.DeleteOptions{}) })
	client, err := NewCoreClient(k.Kubeconfig(t, t.TempDir(), ""))
	if err != nil {
		t.Fatal(err)
	}
	labels, err := NodeLabels(client)(ctx, node.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got := labels["topology.kubernetes.io/zone"]; got != "zone-b" {
		t.Errorf("zone label: got %q, want zone-b", got)
	}
}
