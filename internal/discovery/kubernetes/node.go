package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// NewCoreClient returns a REST client for the core v1 API of the API server
// of kubeconfig, or of the pod's own when kubeconfig is "" (as NewClient).
// It decodes nothing itself: NodeLabels reads the JSON it gets, so that
// no core/v1 types are linked (see types.go).
func NewCoreClient(kubeconfig string) (*rest.RESTClient, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	gv := schema.GroupVersion{Version: "v1"}
	cfg.UserAgent = "attache"
	cfg.APIPath = "/api"
	cfg.GroupVersion = &gv
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	return rest.RESTClientFor(cfg)
}

// restConfig is the client configuration of kubeconfig, or the in-cluster
// one when kubeconfig is "".
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return loadKubeconfig(kubeconfig)
}

// NodeLabels returns a function that reads the labels of a Node through
// client (see NewCoreClient): a GET of /api/v1/nodes/<name>, which needs
// RBAC get on nodes (a ClusterRole: nodes are not namespaced).
func NodeLabels(client rest.Interface) func(ctx context.Context, node string) (map[string]string, error) {
	return func(ctx context.Context, node string) (map[string]string, error) {
		b, err := client.Get().AbsPath("/api/v1/nodes", node).DoRaw(ctx)
		if err != nil {
			return nil, fmt.Errorf("get node %s: %w", node, err)
		}
		var n struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(b, &n); err != nil {
			return nil, fmt.Errorf("get node %s: decode: %w", node, err)
		}
		return n.Metadata.Labels, nil
	}
}
