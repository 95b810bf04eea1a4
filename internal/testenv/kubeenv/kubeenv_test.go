package kubeenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func TestStartServesVerifiedTLSAndTokens(t *testing.T) {
	k := Start(t)
	if k2 := Start(t); k2 != k {
		t.Fatalf("second Start returned another server")
	}
	ctx := context.Background()
	v, err := k.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.34.4" {
		t.Logf("server version %s (the harness was written against v1.34.4)", v.GitVersion)
	}

	// The CA file verifies the serving certificate for 127.0.0.1 and localhost.
	pem, err := os.ReadFile(k.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, url := range []string{k.URL + "/livez", "https://localhost:" + k.URL[len("https://127.0.0.1:"):] + "/livez"} {
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("GET %s with the CA: %v", url, err)
		}
		resp.Body.Close()
	}

	// A bound service-account token authenticates, and has no rights.
	tok := k.Token(t, "kubeenv-test", "nobody", time.Hour)
	if tok2 := k.Token(t, "kubeenv-test", "nobody", time.Hour); tok2 == "" {
		t.Fatal("second Token for an existing service account: empty")
	}
	cfg := rest.CopyConfig(k.Config)
	cfg.BearerToken = tok
	c := kubernetes.NewForConfigOrDie(cfg)
	_, err = c.CoreV1().Pods("kubeenv-test").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("list pods with a token without rights: got %v, want 403 Forbidden", err)
	}
	ssr, err := c.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ssr.Status.UserInfo.Username, "system:serviceaccount:kubeenv-test:nobody"; got != want {
		t.Fatalf("token's user: got %q, want %q", got, want)
	}

	// The kubeconfig file works as client-go loads it.
	kc := k.Kubeconfig(t, t.TempDir(), "")
	kcfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.NewForConfigOrDie(kcfg).CoreV1().Namespaces().Get(ctx, "kubeenv-test", metav1.GetOptions{}); err != nil {
		t.Fatalf("get namespace through the kubeconfig: %v", err)
	}
}
