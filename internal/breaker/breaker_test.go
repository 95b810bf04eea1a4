package breaker

import (
	"testing"
	"time"
)

func TestStateMachine(t *testing.T) {
	now := time.Unix(0, 0)
	var changes []State
	b := New(3, 10*time.Second, func() time.Time { return now }, func(s State) { changes = append(changes, s) })

	for i := 0; i < 2; i++ {
		if !b.Allow() {
			t.Fatal("closed breaker refused")
		}
		b.Done(false)
	}
	b.Allow()
	b.Done(true) // a success resets the count
	for i := 0; i < 3; i++ {
		b.Allow()
		b.Done(false)
	}
	if got := b.State(); got != Open {
		t.Fatalf("after 3 consecutive failures: got %v, want open", got)
	}
	if b.Allow() {
		t.Fatal("open breaker allowed a request")
	}
	now = now.Add(10 * time.Second)
	if got := b.State(); got != HalfOpen {
		t.Fatalf("after open_for: got %v, want half_open", got)
	}
	if !b.Allow() {
		t.Fatal("half-open breaker refused the probe")
	}
	if b.Allow() {
		t.Fatal("half-open breaker allowed a second request during the probe")
	}
	b.Done(false)
	if got := b.State(); got != Open {
		t.Fatalf("failed probe: got %v, want open", got)
	}
	now = now.Add(10 * time.Second)
	b.Allow()
	b.Done(true)
	if got := b.State(); got != Closed {
		t.Fatalf("successful probe: got %v, want closed", got)
	}
	want := []State{Open, HalfOpen, Open, HalfOpen, Closed}
	if len(changes) != len(want) {
		t.Fatalf("changes: got %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("changes: got %v, want %v", changes, want)
		}
	}
}
