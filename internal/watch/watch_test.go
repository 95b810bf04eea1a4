package watch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func waitChange(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no change reported after %s", what)
	}
}

// watching follows paths (polling every poll) for the rest of the test
// and returns where each change is reported, once the watch has begun.
func watching(t *testing.T, poll time.Duration, paths ...string) <-chan struct{} {
	ch := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go Files(ctx, paths, poll, func() { ch <- struct{}{} })
	time.Sleep(50 * time.Millisecond)
	return ch
}

func TestPlainWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	os.WriteFile(p, []byte("a"), 0o644)
	ch := watching(t, time.Hour, p)
	os.WriteFile(p, []byte("b"), 0o644)
	waitChange(t, ch, "a write")
	// touching with the same content is not a change
	os.WriteFile(p, []byte("b"), 0o644)
	select {
	case <-ch:
		t.Fatal("same content reported as a change")
	case <-time.After(300 * time.Millisecond):
	}
}

// TestKubernetesSymlinkSwap mimics how the kubelet updates a ConfigMap or
// Secret volume: file -> ..data/file, ..data -> ..<timestamp>, swapped by
// renaming a new symlink over ..data.
func TestKubernetesSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "..2026_01"), 0o755)
	os.WriteFile(filepath.Join(dir, "..2026_01", "tls.crt"), []byte("old"), 0o644)
	os.Symlink("..2026_01", filepath.Join(dir, "..data"))
	os.Symlink("..data/tls.crt", filepath.Join(dir, "tls.crt"))
	p := filepath.Join(dir, "tls.crt")

	ch := watching(t, time.Hour, p)

	os.Mkdir(filepath.Join(dir, "..2026_02"), 0o755)
	os.WriteFile(filepath.Join(dir, "..2026_02", "tls.crt"), []byte("new"), 0o644)
	os.Symlink("..2026_02", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "..2026_01"))
	waitChange(t, ch, "the ..data symlink swap")
}

func TestPollFallback(t *testing.T) {

	// a path in a directory that does not exist yet: no inotify watch
	missing := filepath.Join(t.TempDir(), "later", "f")
	ch := watching(t, 20*time.Millisecond, missing)
	os.MkdirAll(filepath.Dir(missing), 0o755)
	os.WriteFile(missing, []byte("x"), 0o644)
	waitChange(t, ch, "a file appearing in a new directory")

}

// TestBusyNeighbour: a file written beside the config more often than the
// settle time (a log) neither hides a change of the config nor counts as
// one. Every event used to restart the settle timer, so such a neighbour
// held a change back until the slow poll.
func TestBusyNeighbour(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	os.WriteFile(p, []byte("a"), 0o644)
	ch := watching(t, time.Hour, p)

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.Create(filepath.Join(dir, "app.log"))
		if err != nil {
			return
		}
		defer f.Close()
		for i := 0; i < 500; i++ { // at most 10 s
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				f.WriteString("a log line\n")
			}
		}
	}()
	defer func() { close(stop); <-done }()
	time.Sleep(100 * time.Millisecond)
	select {
	case <-ch:
		t.Fatal("a neighbour's writes reported as a change")
	default:
	}
	os.WriteFile(p, []byte("b"), 0o644)
	waitChange(t, ch, "a write beside a busy log")
}
