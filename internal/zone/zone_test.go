package zone

import (
	"context"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// fromClientset reads Node labels through a client-go clientset (a fake
// one here; kubernetes.NodeLabels in production).
func fromClientset(c *fake.Clientset) NodeLabels {
	return func(ctx context.Context, node string) (map[string]string, error) {
		n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return n.Labels, nil
	}
}

func TestLocalZeroValue(t *testing.T) {
	t.Parallel()
	var l Local
	if got := l.Get(); got != "" {
		t.Errorf("zero value: got %q, want unknown", got)
	}
	l.Set("a")
	if got := l.Get(); got != "a" {
		t.Errorf("got %q, want a", got)
	}
}

// TestLearnFromNodeLabel: the zone is unknown while the node is missing or
// unlabelled, and learned once the label is there.
func TestLearnFromNodeLabel(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	var l Local
	n := &Learner{Get: fromClientset(client), Node: "node-1", Label: "topology.kubernetes.io/zone",
		Log: slog.New(slog.DiscardHandler), BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Learn(ctx, &l) }()

	time.Sleep(20 * time.Millisecond) // some failed attempts: no node
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"kubernetes.io/os": "linux"}}}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // some more: no label
	if got := l.Get(); got != "" {
		t.Fatalf("zone before the label: got %q, want unknown", got)
	}
	node.Labels["topology.kubernetes.io/zone"] = "eu-west-1b"
	if _, err := client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("learn: %v", err)
	}
	if got := l.Get(); got != "eu-west-1b" {
		t.Errorf("zone: got %q, want eu-west-1b", got)
	}
}

func TestLearnStopsWithContext(t *testing.T) {
	t.Parallel()
	var l Local
	n := &Learner{Get: fromClientset(fake.NewClientset()), Node: "gone", Label: "zone", Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Learn(ctx, &l) }()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("got nil, want the context's error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Learn did not return after its context ended")
	}
}
