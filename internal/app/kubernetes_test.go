package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/attache-proxy/attache/internal/testenv/kubeenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// applyManifest creates the ServiceAccounts, Roles and RoleBindings of a
// file in deploy/kubernetes ("scenario/file.yaml") in namespace, so that a
// test runs with exactly the rights the docs tell operators to grant, and
// returns the attache.yaml of its ConfigMap, if it has one. Pods are left
// out (no kubelet here).
func applyManifest(t *testing.T, c kubernetes.Interface, namespace, name string) (attacheYAML string) {
	t.Helper()
	file := "../../deploy/kubernetes/" + name
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			o.Namespace = namespace
			_, err = c.CoreV1().ServiceAccounts(namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			o.Namespace = namespace
			_, err = c.RbacV1().Roles(namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			o.Namespace = namespace
			for i := range o.Subjects {
				o.Subjects[i].Namespace = namespace
			}
			_, err = c.RbacV1().RoleBindings(namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ConfigMap:
			attacheYAML = o.Data["attache.yaml"]
		case *corev1.Pod:
		default:
			t.Fatalf("%s: unexpected %T", file, obj)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %s: %v", obj.GetObjectKind().GroupVersionKind().Kind, err)
		}
	}
	return attacheYAML
}

// loopbackEchoes starts echo servers named names on 127.0.0.2, .3, ... all
// on one port (an EndpointSlice port is one number for all its endpoints).
func loopbackEchoes(t *testing.T, names ...string) (port int, ips map[string]string) {
	t.Helper()
	for try := 0; try < 20; try++ {
		port = 20000 + int(time.Now().UnixNano()%30000)
		ips = map[string]string{}
		var lns []net.Listener
		for i, name := range names {
			ip := fmt.Sprintf("127.0.0.%d", i+2)
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				break
			}
			lns = append(lns, ln)
			ips[name] = ip
		}
		if len(lns) == len(names) {
			for i, ln := range lns {
				serveEcho(t, ln, names[i])
			}
			return port, ips
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatal("no port free on all of 127.0.0.2-.x")
	return 0, nil
}

// TestKubernetesDiscovery points attache at a real API server through a
// kubeconfig with the service-account token of deploy/'s RBAC, and changes
// the Service's EndpointSlice under it: traffic follows, a terminating
// endpoint drains (its open connection goes on, no new one reaches it), and
// endpoints that stay keep their state.
func TestKubernetesDiscovery(t *testing.T) {
	t.Parallel()
	k := kubeenv.Start(t)
	const ns = "attache-discovery"
	k.Namespace(t, ns)
	applyManifest(t, k.Client, ns, "api-gateway/rbac.yaml")
	token := k.Token(t, ns, "frontend", time.Hour)
	kubeconfig := k.Kubeconfig(t, t.TempDir(), token)

	ctx := context.Background()
	_, err := k.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "users"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The API server outlives the test (go test -count=N): leave no object.
	t.Cleanup(func() {
		k.Client.CoreV1().Services(ns).Delete(ctx, "users", metav1.DeleteOptions{})
		for _, name := range []string{"users-test", "orders-test"} {
			k.Client.DiscoveryV1().EndpointSlices(ns).Delete(ctx, name, metav1.DeleteOptions{})
		}
	})
	port, ips := loopbackEchoes(t, "a", "b", "c")
	yes, no := ptr(true), ptr(false)
	endpoint := func(name string, ready, serving, terminating *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{podIP(ips[name])},
			Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}}
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "users-test", Labels: map[string]string{
			discoveryv1.LabelServiceName: "users", discoveryv1.LabelManagedBy: "attache-test.example.com"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: ptr("metrics"), Port: ptr(int32(9))},
			{Name: ptr("http"), Port: ptr(int32(port)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{endpoint("a", yes, yes, no), endpoint("b", yes, yes, no)},
	}
	slices := k.Client.DiscoveryV1().EndpointSlices(ns)
	if es, err = slices.Create(ctx, es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Another Service's slice in the same namespace, pointing at c: c must
	// not get traffic until the users slice lists it.
	orders := es.DeepCopy()
	orders.ObjectMeta = metav1.ObjectMeta{Name: "orders-test", Labels: map[string]string{
		discoveryv1.LabelServiceName: "orders", discoveryv1.LabelManagedBy: "attache-test.example.com"}}
	orders.Endpoints = []discoveryv1.Endpoint{endpoint("c", yes, yes, no)}
	if _, err := slices.Create(ctx, orders, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setEndpoints := func(eps ...discoveryv1.Endpoint) {
		t.Helper()
		es.Endpoints = eps
		if es, err = slices.Update(ctx, es, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	h := startWith(t, yamlf(`
listeners: [{name: users, address: "127.0.0.1:0", cluster: users}]
clusters:
  - name: users
    discovery: {kubernetes: {service: users, namespace: %s, port: http, kubeconfig: %s}}
`, ns, kubeconfig), nil, Options{dial: podNetwork(t)})
	h.waitReady()
	// backends returns who answered 12 new connections.
	backends := func() map[string]bool {
		seen := map[string]bool{}
		for i := 0; i < 12; i++ {
			if r, err := ask(h.addr("users"), "x"); err == nil {
				name, _, _ := strings.Cut(r, ":")
				seen[name] = true
			}
		}
		return seen
	}
	follows := func(what string, want ...string) {
		t.Helper()
		eventually(t, 30*time.Second, what, func() bool {
			seen := backends()
			if len(seen) != len(want) {
				return false
			}
			for _, w := range want {
				if !seen[w] {
					return false
				}
			}
			return true
		})
	}
	cluster := func() *upstream.Cluster { return h.app.gen.Load().clusters["users"].up }
	endpointOf := func(name string) *upstream.Endpoint {
		for _, e := range cluster().Endpoints() {
			if e.Addr == net.JoinHostPort(podIP(ips[name]), strconv.Itoa(port)) {
				return e
			}
		}
		return nil
	}
	follows("traffic to a and b", "a", "b")

	// An open connection to a, to see it outlive a's draining.
	conn, err := net.DialTimeout("tcp", h.addr("users"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	talk := func(msg string) string {
		t.Helper()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatalf("write on the open connection: %v", err)
		}
		buf := make([]byte, 100)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read on the open connection: %v", err)
		}
		return string(buf[:n])
	}
	first, _, _ := strings.Cut(talk("hello"), ":")
	other := map[string]string{"a": "b", "b": "a"}[first]
	kept := endpointOf(other)

	// The endpoint of the open connection starts terminating (still serving):
	// no new connection reaches it; the open one carries on.
	eps := map[string]discoveryv1.Endpoint{first: endpoint(first, no, yes, yes), other: endpoint(other, yes, yes, no)}
	setEndpoints(eps["a"], eps["b"])
	follows("terminating "+first+" drained", other)
	if got, want := talk("still"), first+":still"; got != want {
		t.Fatalf("open connection to the terminating endpoint: got %q, want %q", got, want)
	}

	setEndpoints(eps["a"], eps["b"], endpoint("c", nil, nil, nil))
	follows("c added", other, "c")
	if endpointOf(other) != kept {
		t.Fatalf("endpoint %s was replaced by a discovery change that kept it; its state and connections must carry over", other)
	}

	setEndpoints(eps["a"], eps["b"], endpoint("c", no, no, no))
	follows("c not ready", other)

	setEndpoints(endpoint("c", yes, nil, nil))
	follows("a and b deleted", "c")
	if got, want := talk("after"), first+":after"; got != want {
		t.Fatalf("open connection after its endpoint was deleted: got %q, want %q", got, want)
	}

	// A reload that changes the cluster starts a new watch; until it
	// reports, the new generation serves with the endpoints it inherited.
	c := endpointOf("c")
	before := h.app.gen.Load()
	h.rewrite(yamlf(`
listeners: [{name: users, address: "127.0.0.1:0", cluster: users}]
clusters:
  - name: users
    balance: random
    discovery: {kubernetes: {service: users, namespace: %s, port: http, kubeconfig: %s}}
`, ns, kubeconfig))
	eventually(t, 30*time.Second, "the reload", func() bool { return h.app.gen.Load() != before })
	if got, err := ask(h.addr("users"), "x"); err != nil || got != "c:x" {
		t.Fatalf("right after the reload: got %q, %v; want c:x", got, err)
	}
	follows("c after the reload", "c")
	if endpointOf("c") != c {
		t.Fatal("endpoint c was replaced by the reload; its state must carry over")
	}

	if err := slices.Delete(ctx, es.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "no endpoints after the slice was deleted", func() bool { return len(cluster().Endpoints()) == 0 })
	if got := backends(); len(got) != 0 {
		t.Fatalf("with no endpoints, backends answered: %v", got)
	}
}

// The API server refuses loopback endpoint addresses, so the slices carry
// pod-like addresses 10.255.0.N and the test's dialer, playing the pod
// network, routes them to the listeners on 127.0.0.N. Anything else is
// refused: the test sends nothing off the machine.
func podIP(loopback string) string { return "10.255.0." + strings.TrimPrefix(loopback, "127.0.0.") }

func podNetwork(t *testing.T) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, _ := net.SplitHostPort(addr)
		n, ok := strings.CutPrefix(host, "10.255.0.")
		if !ok {
			return nil, fmt.Errorf("test pod network: no route to %s", addr)
		}
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0."+n, port))
	}
}

func ptr[T any](v T) *T { return &v }

// TestKubernetesDiscoveryWithoutRights: a service account that may not list
// endpointslices gets 403; attache says so in its log and stays not ready
// rather than serving an empty cluster as if it were known.
func TestKubernetesDiscoveryWithoutRights(t *testing.T) {
	t.Parallel()
	k := kubeenv.Start(t)
	const ns = "attache-discovery-norights"
	kubeconfig := k.Kubeconfig(t, t.TempDir(), k.Token(t, ns, "nobody", time.Hour))
	h := startWith(t, yamlf(`
listeners: [{name: users, address: "127.0.0.1:0", cluster: users}]
clusters:
  - name: users
    discovery: {kubernetes: {service: users, namespace: %s, port: http, kubeconfig: %s}}
`, ns, kubeconfig), nil, Options{dial: podNetwork(t)})
	eventually(t, 30*time.Second, "a log line about the refused list", func() bool {
		logs := h.logs.String()
		return strings.Contains(logs, "list/watch of endpointslices failed") && strings.Contains(logs, "forbidden")
	})
	if ok, reasons := h.app.Ready(); ok || !strings.Contains(strings.Join(reasons, "; "), `cluster "users": kubernetes discovery failing`) ||
		!strings.Contains(strings.Join(reasons, "; "), "forbidden") {
		t.Fatalf("ready: got %v %v, want not ready, naming the refused kubernetes discovery of cluster users", ok, reasons)
	}
}

// TestKubernetesDiscoveryOutsideACluster: without kubeconfig and outside a
// pod, the start fails naming the cluster and the missing in-cluster config.
func TestKubernetesDiscoveryOutsideACluster(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	file := t.TempDir() + "/attache.yaml"
	os.WriteFile(file, []byte(`admin: {address: "127.0.0.1:0"}
listeners: [{name: users, address: "127.0.0.1:0", cluster: users}]
clusters: [{name: users, discovery: {kubernetes: {service: users, namespace: shop, port: http}}}]
`), 0o644)
	a, err := New(Options{ConfigPath: file, LogOutput: io.Discard})
	want := `cluster "users": discovery.kubernetes: unable to load in-cluster configuration`
	if err == nil || !strings.Contains(err.Error(), want) {
		if a != nil {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			a.Run(ctx, ctx)
		}
		t.Fatalf("start outside a cluster: got %v, want an error containing %q", err, want)
	}
}
