package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/testenv/kubeenv"
	"github.com/attache-proxy/attache/internal/testenv/kubeletenv"
)

const (
	attacheImage = "attache:e2e" // what inject writes; the kubelet looks for docker.io/library/attache:e2e
	appImage     = "docker.io/library/attache-podapp:e2e"
	namespace    = "e2e-sidecar"
)

// TestNativeSidecar runs, under a real kubelet, the pod `attache inject`
// makes of an application pod, with attache's image from tools/image, and
// checks the native sidecar's lifecycle: the application starts only once
// attache's startupProbe passed (its first connection through attache
// works and attache reports itself started), the readinessProbe on the
// probe server follows attache's /ready both ways, and on deletion attache
// is still serving, not draining, while the application handles its
// SIGTERM, and the pod goes away.
func TestNativeSidecar(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an API server, containerd and a kubelet")
	}
	kube := kubeenv.Start(t)
	node := kubeletenv.Start(t, kube)
	dir := t.TempDir()

	attacheBin := goBuild(t, dir, "attache", "github.com/attache-proxy/attache/cmd/attache")
	node.Import(t, buildAttacheImage(t, dir, attacheBin))
	appTar := filepath.Join(dir, "podapp.tar")
	if err := kubeletenv.WriteImage(appTar, kubeletenv.Image{
		Ref:        appImage,
		Files:      map[string]string{"podapp": goBuild(t, dir, "podapp", "github.com/attache-proxy/attache/internal/e2e/podapp")},
		Entrypoint: []string{"/podapp"},
		User:       "65532:65532",
	}); err != nil {
		t.Fatal(err)
	}
	node.Import(t, appTar)

	// The test's server, which the application reaches only through attache.
	be := newBackend(t)
	listen, admin, probes := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	_, probePort, _ := net.SplitHostPort(probes)
	cfgFile := filepath.Join(dir, "attache.yaml")
	writeFile(t, cfgFile, fmt.Sprintf(`admin: {address: %q}
probes: {address: "0.0.0.0:%s"}
drain_min: 1s
drain_timeout: 10s
listeners:
  - {name: backend, address: %q, protocol: tcp, cluster: backend}
clusters:
  - name: backend
    endpoints: [%q]
    health_check: {type: http, path: /healthz, interval: 1s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1}
`, admin, probePort, listen, be.addr))
	podFile := filepath.Join(dir, "pod.yaml")
	writeFile(t, podFile, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: app
  namespace: %s
spec:
  nodeName: %s
  hostNetwork: true
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 30
  containers:
    - name: app
      image: %s
      args: [-admin, %q, -via, %q, -term-wait, 1s]
`, namespace, node.Name, appImage, admin, "http://"+listen))

	inject := exec.Command(attacheBin, "inject", podFile, "--config", cfgFile, "--image", attacheImage)
	out, err := inject.Output()
	if err != nil {
		t.Fatalf("attache inject: %v\n%s", err, stderr(err))
	}
	cm, pod := decodeInjected(t, out)
	if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != "attache" {
		t.Fatalf("inject made no native sidecar:\n%s", out)
	}

	kube.Namespace(t, namespace)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pods := kube.Client.CoreV1().Pods(namespace)
	if _, err := kube.Client.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create configmap: %v", err)
	}
	created := time.Now()
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("attache's log:\n%s\napp's log:\n%s\n%s", node.ContainerLog(namespace, "app", "attache"),
				node.ContainerLog(namespace, "app", "app"), node.Logs())
		}
	})
	dump := func() string {
		p, err := pods.Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		b, _ := json.MarshalIndent(p.Status, "", "  ")
		return string(b)
	}

	// Start order: the application's first act, asking attache whether it
	// started and sending a request through it, succeeded at once.
	if got := be.next(t, "start", 3*time.Minute, dump); got != "started=200" {
		t.Fatalf("the application started before attache: its start report is %q", got)
	}
	t.Logf("pod started %v after its creation", time.Since(created).Round(100*time.Millisecond))
	p := waitPod(t, ctx, pods, time.Minute, "pod Ready", func(p *corev1.Pod) bool { return podReady(p) })
	sidecar, app := p.Status.InitContainerStatuses, p.Status.ContainerStatuses
	if len(sidecar) != 1 || len(app) != 1 {
		t.Fatalf("pod status: want one init container and one container:\n%s", dump())
	}
	if sidecar[0].RestartCount != 0 || app[0].RestartCount != 0 || sidecar[0].Started == nil || !*sidecar[0].Started {
		t.Fatalf("want both containers started once, attache started:\n%s", dump())
	}
	if as, ap := sidecar[0].State.Running, app[0].State.Running; as == nil || ap == nil || ap.StartedAt.Before(&as.StartedAt) {
		t.Fatalf("want the application running, started no earlier than attache:\n%s", dump())
	}
	if n := be.count("start"); n != 1 {
		t.Fatalf("the application reported its start %d times, want once", n)
	}

	// Probes from outside the pod's loopback: the kubelet's readinessProbe
	// on the probe server follows attache's /ready, which follows the
	// backend's health check.
	be.healthy.Store(false)
	waitPod(t, ctx, pods, time.Minute, "attache NotReady after its backend failed", func(p *corev1.Pod) bool {
		return len(p.Status.InitContainerStatuses) == 1 && !p.Status.InitContainerStatuses[0].Ready && !podReady(p)
	})
	be.healthy.Store(true)
	waitPod(t, ctx, pods, time.Minute, "attache Ready again", func(p *corev1.Pod) bool { return podReady(p) })

	// SIGTERM order: the application terminates first, with attache still
	// serving and not draining, then attache.
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=app"})
	if err != nil {
		t.Fatalf("watch pod: %v", err)
	}
	defer w.Stop()
	deleted := time.Now()
	if err := pods.Delete(ctx, "app", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	if got := be.next(t, "term", time.Minute, dump); got != "ready=200" {
		t.Fatalf("attache was not serving as ready while the application terminated: its report is %q", got)
	}
	waitGone(t, ctx, pods, time.Minute, dump)
	t.Logf("pod gone %v after its deletion", time.Since(deleted).Round(100*time.Millisecond))
	// The kubelet reports both containers terminated before the pod goes:
	// each exited 0 (attache drained and exited on its SIGTERM), attache no
	// earlier than the application.
	var appEnd, sidecarEnd *corev1.ContainerStateTerminated
	for done := false; !done; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok || ev.Type == watch.Deleted {
				done = true
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod {
				continue
			}
			for _, c := range p.Status.ContainerStatuses {
				if c.State.Terminated != nil {
					appEnd = c.State.Terminated
				}
			}
			for _, c := range p.Status.InitContainerStatuses {
				if c.State.Terminated != nil {
					sidecarEnd = c.State.Terminated
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no deletion event for the pod")
		}
	}
	if appEnd == nil || sidecarEnd == nil {
		t.Fatalf("the kubelet reported no termination of both containers (application %v, attache %v)", appEnd, sidecarEnd)
	}
	if appEnd.ExitCode != 0 || sidecarEnd.ExitCode != 0 || sidecarEnd.FinishedAt.Before(&appEnd.FinishedAt) {
		t.Fatalf("termination: application exit %d at %v, attache exit %d at %v; want both 0, attache last",
			appEnd.ExitCode, appEnd.FinishedAt, sidecarEnd.ExitCode, sidecarEnd.FinishedAt)
	}
}

// backend is the server behind attache: /healthz answers per healthy,
// /start and /term record the application's reports.
type backend struct {
	addr    string
	healthy atomic.Bool
	mu      sync.Mutex
	reports map[string][]string
	notify  chan struct{}
}

func newBackend(t *testing.T) *backend {
	ln, err := net.Listen("tcp", testenv.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String(), reports: map[string][]string{}, notify: make(chan struct{}, 16)}
	b.healthy.Store(true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !b.healthy.Load() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
		}
	})
	for _, kind := range []string{"start", "term"} {
		mux.HandleFunc("GET /"+kind, func(w http.ResponseWriter, r *http.Request) {
			b.mu.Lock()
			b.reports[kind] = append(b.reports[kind], r.URL.RawQuery)
			b.mu.Unlock()
			select {
			case b.notify <- struct{}{}:
			default:
			}
		})
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// next waits for the first report of kind and returns its query.
func (b *backend) next(t *testing.T, kind string, within time.Duration, dump func() string) string {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		r := b.reports[kind]
		b.mu.Unlock()
		if len(r) > 0 {
			return r[0]
		}
		select {
		case <-b.notify:
		case <-time.After(time.Second):
		case <-deadline.C:
			t.Fatalf("no %s report from the application within %v; pod status:\n%s", kind, within, dump())
		}
	}
}

func (b *backend) count(kind string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.reports[kind])
}

type podClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Pod, error)
}

// waitPod polls the pod until ok, for at most within.
func waitPod(t *testing.T, ctx context.Context, pods podClient, within time.Duration, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		p, err := pods.Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get pod: %v", err)
		}
		if ok(p) {
			return p
		}
		last = p
	}
	b, _ := json.MarshalIndent(last.Status, "", "  ")
	t.Fatalf("%s: not within %v; pod status:\n%s", what, within, b)
	return nil
}

func waitGone(t *testing.T, ctx context.Context, pods podClient, within time.Duration, dump func() string) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if _, err := pods.Get(ctx, "app", metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
	}
	t.Fatalf("pod not gone %v after its deletion; status:\n%s", within, dump())
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// decodeInjected reads inject's output: the ConfigMap, then the pod.
func decodeInjected(t *testing.T, out []byte) (*corev1.ConfigMap, *corev1.Pod) {
	t.Helper()
	dec := k8syaml.NewYAMLOrJSONDecoder(strings.NewReader(string(out)), 4096)
	var cm *corev1.ConfigMap
	var pod *corev1.Pod
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("inject output: %v\n%s", err, out)
		}
		var meta metav1.TypeMeta
		json.Unmarshal(raw, &meta)
		var dst any
		switch meta.Kind {
		case "ConfigMap":
			cm = &corev1.ConfigMap{}
			dst = cm
		case "Pod":
			pod = &corev1.Pod{}
			dst = pod
		default:
			t.Fatalf("inject output: unexpected %q document\n%s", meta.Kind, out)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatalf("inject output: %v\n%s", err, out)
		}
	}
	if cm == nil || pod == nil {
		t.Fatalf("inject output: want a ConfigMap and a Pod:\n%s", out)
	}
	return cm, pod
}

// goBuild builds a static binary of pkg for this machine into dir.
func goBuild(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command(goTool(), "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// buildAttacheImage assembles attache's image from bin as make image does
// (tools/image, its own module), for this machine's architecture only.
func buildAttacheImage(t *testing.T, dir, bin string) string {
	t.Helper()
	gomod, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	out := filepath.Join(dir, "attache-image.tar")
	cmd := exec.Command(goTool(), "run", ".", "-o", out, "-name", attacheImage, "-version", "e2e",
		"-bin", "linux/"+runtime.GOARCH+"="+bin)
	cmd.Dir = filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "tools", "image")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tools/image: %v\n%s", err, b)
	}
	return out
}

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func writeFile(t *testing.T, name, body string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func stderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
