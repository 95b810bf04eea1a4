package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/upstream"
	"github.com/attache-proxy/attache/internal/watch"
)

// File reads a cluster's endpoints from a file, and again each time its
// content changes, watched as the configuration file is (internal/watch:
// plain writes, renames over it, and the ..data symlink swap of a mounted
// ConfigMap). The format is config.ParseEndpoints's. A file that does not
// read or parse leaves the last good set in place: a half-written or broken
// file must not empty a cluster.
type File struct {
	Path   string
	Poll   time.Duration // how often to compare when inotify misses a change; 0: 5s
	Log    *slog.Logger
	Report func(error) // told nil after each good read and the error after each bad one; may be nil
}

// Run reads the file, then follows it until ctx ends.
func (f *File) Run(ctx context.Context, update func([]upstream.Target)) {
	poll := f.Poll
	if poll <= 0 {
		poll = 5 * time.Second
	}
	var last []upstream.Target
	have := false
	load := func() {
		ts, err := ReadFile(f.Path)
		if f.Report != nil {
			f.Report(err)
		}
		if err != nil {
			f.Log.Error("endpoints file does not load; keeping the last good endpoints", "error", err, "kept", len(last))
			return
		}
		if have && slices.Equal(ts, last) {
			return
		}
		last, have = ts, true
		f.Log.Info("file discovery", "path", f.Path, "endpoints", len(ts))
		update(ts)
	}
	watch.Follow(ctx, []string{f.Path}, poll, load)
}

// ReadFile reads and parses an endpoints file.
func ReadFile(path string) ([]upstream.Target, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read endpoints file: %w", err)
	}
	eps, err := config.ParseEndpoints(path, data)
	if err != nil {
		return nil, err
	}
	ts := make([]upstream.Target, len(eps))
	for i, e := range eps {
		ts[i] = upstream.Target{Addr: e.Address, Weight: e.Weight, Name: e.Name, Zone: e.Zone}
	}
	return ts, nil
}
