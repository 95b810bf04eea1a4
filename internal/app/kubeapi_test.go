package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/protocols"
	"github.com/attache-proxy/attache/internal/testenv/kubeenv"
)

// TestKubernetesAPIAgainstKubeAPIServer is the kubectl-proxy ambassador
// against a real kube-apiserver: the app calls attache in plain HTTP, and
// reaches the API server with the identity of the token file, which is
// rotated mid-test by the kubelet's ..data symlink swap; a token without
// rights gets the API server's own 403; exec is refused by attache itself;
// a watch streams an event made after it started.
func TestKubernetesAPIAgainstKubeAPIServer(t *testing.T) {
	t.Parallel()
	k := kubeenv.Start(t)
	ctx := context.Background()
	const ns = "attache-kubeapi"
	k.Namespace(t, ns)
	// The service account, Role and RoleBinding of the ready-made manifest,
	// so that the test runs with the rights the docs tell people to grant;
	// its ConfigMap's config must load as written.
	applyManifest(t, k.Client, ns, "kube-api-ambassador/rbac.yaml")
	attacheYAML := applyManifest(t, k.Client, ns, "kube-api-ambassador/configmap.yaml")
	if attacheYAML == "" {
		t.Fatal("kube-api-ambassador/configmap.yaml: no ConfigMap with attache.yaml")
	}
	reader := k.Token(t, ns, "pod-reader", time.Hour)
	nobody := k.Token(t, ns, "nobody", time.Hour)
	saDir := t.TempDir()
	kubeSecretDir(t, saDir, map[string]string{"token": reader})
	u, _ := url.Parse(k.URL)
	h := start(t, yamlf(`
listeners:
  - {name: kube, address: "127.0.0.1:0", protocol: http, routes: [{match: {prefix: /}, to: [{cluster: kube-api}], timeout: 1s}]}
clusters:
  - name: kube-api
    kubernetes_api: {token_file: "%s/token", ca_file: "%s"}
`, saDir, k.CAFile), map[string]string{"KUBERNETES_SERVICE_HOST": u.Hostname(), "KUBERNETES_SERVICE_PORT": u.Port()})
	base := "http://" + h.addr("kube")
	client := &http.Client{Timeout: 30 * time.Second}
	manifestCfg := strings.ReplaceAll(attacheYAML, "kubernetes_api: {}", fmt.Sprintf("kubernetes_api: {token_file: %s/token, ca_file: %s}", saDir, k.CAFile))
	if _, err := config.Parse([]byte(manifestCfg), func(k string) (string, bool) {
		return map[string]string{"KUBERNETES_SERVICE_HOST": u.Hostname(), "KUBERNETES_SERVICE_PORT": u.Port()}[k], true
	}, protocols.Schemas()); err != nil || !strings.Contains(attacheYAML, "kubernetes_api: {}") {
		t.Errorf("deploy/kubernetes/kube-api-ambassador/configmap.yaml: its attache.yaml does not load with kubernetes_api: {}: %v", err)
	}

	whoami := func() string {
		t.Helper()
		resp, err := client.Post(base+"/apis/authentication.k8s.io/v1/selfsubjectreviews", "application/json",
			strings.NewReader(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ssr struct {
			Status struct {
				UserInfo struct{ Username string } `json:"userInfo"`
			} `json:"status"`
		}
		json.NewDecoder(resp.Body).Decode(&ssr)
		return ssr.Status.UserInfo.Username
	}
	listPods := func() (*http.Response, string) {
		t.Helper()
		return httpGet(t, client, base+"/api/v1/namespaces/"+ns+"/pods", map[string]string{"Authorization": "Bearer not-the-app's-to-give"})
	}

	if got, want := whoami(), "system:serviceaccount:"+ns+":pod-reader"; got != want {
		t.Fatalf("identity through attache: got %q, want %q", got, want)
	}
	if resp, body := listPods(); resp.StatusCode != 200 || !strings.Contains(body, `"kind":"PodList"`) {
		t.Fatalf("list pods as reader: got %d %q", resp.StatusCode, body)
	}

	// exec is refused by attache before anything reaches the API server.
	resp, body := httpGet(t, client, base+"/api/v1/namespaces/"+ns+"/pods/web/exec?command=sh", nil)
	if resp.StatusCode != 403 || resp.Header.Get("X-Attache-Reason") != "path rejected" {
		t.Errorf("exec: got %d %q (x-attache-reason %q), want 403 from attache", resp.StatusCode, body, resp.Header.Get("X-Attache-Reason"))
	}

	// A watch streams an event made after it started, past the 1s route
	// timeout (which ends when the response headers arrive).
	wresp, err := client.Get(base + "/api/v1/namespaces/" + ns + "/pods?watch=1")
	if err != nil {
		t.Fatal(err)
	}
	defer wresp.Body.Close()
	if wresp.StatusCode != 200 {
		b, _ := io.ReadAll(wresp.Body)
		t.Fatalf("watch: got %d %s", wresp.StatusCode, b)
	}
	time.Sleep(1500 * time.Millisecond)
	podName := fmt.Sprintf("watched-%d", time.Now().UnixNano()) // the server is shared by -count runs
	if _, err := k.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	events := make(chan string, 16)
	go func() {
		defer close(events)
		br := bufio.NewReader(wresp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			events <- line
		}
	}()
	deadline := time.After(30 * time.Second)
wait:
	for {
		select {
		case line, ok := <-events:
			if !ok {
				t.Fatal("watch ended before the ADDED event of the new pod")
			}
			if strings.Contains(line, `"type":"ADDED"`) && strings.Contains(line, `"name":"`+podName+`"`) {
				break wait
			}
		case <-deadline:
			t.Fatal("no ADDED event for the new pod within 30s")
		}
	}

	// Rotation to a token without rights: the new identity is used, and the
	// API server's 403 passes through unchanged.
	kubeSecretDir(t, saDir, map[string]string{"token": nobody})
	eventually(t, 20*time.Second, "the rotated token in use", func() bool {
		return whoami() == "system:serviceaccount:"+ns+":nobody"
	})
	resp, body = listPods()
	if resp.StatusCode != 403 || resp.Header.Get("X-Attache-Reason") != "" || !strings.Contains(body, `"reason":"Forbidden"`) ||
		!strings.Contains(body, "system:serviceaccount:"+ns+":nobody") {
		t.Errorf("list pods as nobody: got %d %q (x-attache-reason %q), want the API server's 403", resp.StatusCode, body, resp.Header.Get("X-Attache-Reason"))
	}
	if logs := h.logs.String(); strings.Contains(logs, reader[:40]) || strings.Contains(logs, nobody[:40]) {
		t.Error("a token shows in attache's logs")
	}
}
