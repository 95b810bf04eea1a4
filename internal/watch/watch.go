// Package watch tells when files change: config files, certificates, keys
// and tokens mounted from Kubernetes ConfigMaps and Secrets.
//
// Kubernetes updates a mounted volume by writing a new timestamped directory
// and swapping the "..data" symlink, so the watched path itself never sees a
// write event. Watching the parent directory and comparing file contents
// catches that swap, an editor's rename-over, and plain writes alike. A slow
// poll backs up inotify where it does not work (some network volumes) and
// when a directory is replaced.
package watch

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long a burst of events must be quiet before the files are
// compared: a symlink swap is several events.
const settle = 100 * time.Millisecond

// Files calls onChange, from one goroutine, each time the content of any of
// paths differs from what it was at the previous call (or at start). A file
// that cannot be read counts as empty content, so its return is a change.
// It returns when ctx ends.
func Files(ctx context.Context, paths []string, poll time.Duration, onChange func()) {
	follow(ctx, paths, poll, onChange, false)
}

// Follow is Files that also calls onChange once at the start, for a reader
// that loads the files there: the content is compared against what it was
// before that first call, so a change made while it reads is not missed.
func Follow(ctx context.Context, paths []string, poll time.Duration, onChange func()) {
	follow(ctx, paths, poll, onChange, true)
}

func follow(ctx context.Context, paths []string, poll time.Duration, onChange func(), initial bool) {
	last := fingerprint(paths)
	names := map[string]bool{}
	for _, p := range paths {
		names[filepath.Base(p)] = true
	}
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err == nil {
		defer w.Close()
		var dirs []string
		for _, p := range paths {
			dirs = append(dirs, filepath.Dir(p))
		}
		slices.Sort(dirs)
		for _, d := range slices.Compact(dirs) {
			w.Add(d)
		}
		events = w.Events
		go func() {
			for range w.Errors {
			}
		}()
	}
	if initial {
		onChange()
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	quiet := time.NewTimer(settle)
	quiet.Stop()
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if relevant(names, ev.Name) {
				quiet.Reset(settle)
			}
			continue
		case <-quiet.C:
		case <-tick.C:
		}
		quiet.Stop() // a poll compares too: no settle is pending after it
		if fp := fingerprint(paths); fp != last {
			last = fp
			onChange()
		}
	}
}

// relevant reports whether an event on name, in a watched directory, may
// change a watched file: one of the files itself (written, or renamed
// over), or an entry of Kubernetes' atomic writer ("..data" and its
// timestamped directories). A busy neighbour, such as a log file written
// beside the config, is not: each of its writes would otherwise restart
// the settle timer and compare the files again.
func relevant(names map[string]bool, name string) bool {
	base := filepath.Base(name)
	return names[base] || strings.HasPrefix(base, "..")
}

func fingerprint(paths []string) [32]byte {
	h := sha256.New()
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		s := sha256.Sum256(b)
		h.Write(s[:])
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
