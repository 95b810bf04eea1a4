package discovery

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/upstream"
)

func runFile(t *testing.T, path string) (updates chan []upstream.Target, reports chan error) {
	t.Helper()
	updates, reports = make(chan []upstream.Target, 100), make(chan error, 100)
	f := &File{Path: path, Poll: time.Hour, Log: slog.New(slog.DiscardHandler), Report: func(err error) {
		select {
		case reports <- err:
		default:
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx, func(ts []upstream.Target) { updates <- ts }); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return updates, reports
}

func TestFileFollowsWritesAndKeepsLastGood(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "partners.yaml")
	os.WriteFile(p, []byte("- b.example:443 weight=2\n- 10.0.0.1:443\n"), 0o644)
	updates, reports := runFile(t, p)
	want := []upstream.Target{{Addr: "b.example:443", Weight: 2}, {Addr: "10.0.0.1:443", Weight: 1}}
	if got := next(t, updates, "first set"); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v (file order kept)", got, want)
	}
	next(t, reports, "first report")

	// A bad line: the error names file and line, the last good set stays.
	os.WriteFile(p, []byte("- 10.0.0.1:443\n- 10.0.0.2\n"), 0o644)
	err := next(t, reports, "report of the bad file")
	if err == nil || !strings.Contains(err.Error(), p+":2: ") || !strings.Contains(err.Error(), "want host:port") {
		t.Fatalf("got %v, want an error naming %s line 2", err, p)
	}
	// An empty file is what a reader sees in the middle of a truncating
	// write; it must not empty the cluster either.
	os.WriteFile(p, nil, 0o644)
	if err := next(t, reports, "report of the empty file"); err == nil || !strings.Contains(err.Error(), "empty file") {
		t.Fatalf("got %v, want an empty-file error", err)
	}
	select {
	case ts := <-updates:
		t.Fatalf("update %v from a bad file", ts)
	default:
	}
	os.WriteFile(p, []byte("[\"10.0.0.3:443\"]\n"), 0o644)
	if got := next(t, updates, "set after the fix"); !slices.Equal(got, []upstream.Target{{Addr: "10.0.0.3:443", Weight: 1}}) {
		t.Fatalf("got %v, want [10.0.0.3:443]", got)
	}
	if err := next(t, reports, "report after the fix"); err != nil {
		t.Fatalf("report after the fix: got %v, want nil", err)
	}
}

// TestFileConfigMapSwap updates the file the way the kubelet updates a
// mounted ConfigMap: partners.yaml -> ..data/partners.yaml, and ..data, a
// symlink to a timestamped directory, replaced by a rename.
func TestFileConfigMapSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "..2026_12_01_1"), 0o755)
	os.WriteFile(filepath.Join(dir, "..2026_12_01_1", "partners.yaml"), []byte("- 10.0.0.1:443\n"), 0o644)
	os.Symlink("..2026_12_01_1", filepath.Join(dir, "..data"))
	os.Symlink("..data/partners.yaml", filepath.Join(dir, "partners.yaml"))
	updates, _ := runFile(t, filepath.Join(dir, "partners.yaml"))
	if got := next(t, updates, "first set"); len(got) != 1 || got[0].Addr != "10.0.0.1:443" {
		t.Fatalf("got %v, want [10.0.0.1:443]", got)
	}

	os.Mkdir(filepath.Join(dir, "..2026_12_01_2"), 0o755)
	os.WriteFile(filepath.Join(dir, "..2026_12_01_2", "partners.yaml"), []byte("- 10.0.0.1:443\n- 10.0.0.2:443\n"), 0o644)
	os.Symlink("..2026_12_01_2", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "..2026_12_01_1"))
	if got := next(t, updates, "set after the ..data swap"); len(got) != 2 {
		t.Fatalf("after the swap: got %v, want two endpoints", got)
	}
}
