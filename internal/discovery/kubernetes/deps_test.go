package kubernetes

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAttacheLinksNoKubernetesAPITypes guards the reason for types.go: the
// attache binary must not link k8s.io/api (its core/v1 alone costs about
// 1.3 MiB of idle RSS, see docs/http.md), so a new import of it from
// non-test code fails here. Nor clientcmd, for the same reason
// (kubeconfig.go: 120 KiB).
func TestAttacheLinksNoKubernetesAPITypes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs go list")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", "github.com/attache-proxy/attache/cmd/attache").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "k8s.io/api/") {
			t.Errorf("cmd/attache links %s; use this package's trimmed types", p)
		}
		if p == "k8s.io/client-go/tools/clientcmd" {
			t.Errorf("cmd/attache links %s; loadKubeconfig reads kubeconfig files", p)
		}
	}
}
