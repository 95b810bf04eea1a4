// Package failover notices when another endpoint becomes the primary of a
// cluster and tells whoever asked to be told (on_failover): it runs a
// command, POSTs a webhook, or both, as pgpool's failover_command does. It
// never promotes anything: the promotion was made by someone else (an
// operator, Patroni, pg_ctl promote), and the roles come from the
// cluster's postgres health check.
//
// A Watcher is fed after every health-check round (Observe, which never
// blocks) and runs the hooks of what it saw one at a time in its own
// goroutine (Run), each bounded by the hook's timeout, so that a slow hook
// delays neither the checks nor the data path.
package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/upstream"
)

// Event is one change of primary.
type Event struct {
	Cluster    string    `json:"cluster"`
	OldPrimary string    `json:"old_primary"`
	NewPrimary string    `json:"new_primary"`
	Time       time.Time `json:"time"`
}

// Hook is what to run on an Event. Command is an argv (no shell) run with
// the event in its environment (ATTACHE_CLUSTER, ATTACHE_OLD_PRIMARY,
// ATTACHE_NEW_PRIMARY) on top of attache's own; Webhook is POSTed the
// event as JSON and must answer 2xx. Either may be empty. Each is killed
// or abandoned after Timeout.
type Hook struct {
	Command []string
	Webhook string
	Timeout time.Duration
	Client  *http.Client // nil: http.DefaultClient
}

// maxOutput bounds the command output kept for the log.
const maxOutput = 4 << 10

// Run runs the command and then the webhook of h for ev, and returns the
// first failure. Both are tried.
func (h *Hook) Run(ctx context.Context, ev Event) (output string, err error) {
	var errs []error
	if len(h.Command) > 0 {
		out, err := h.runCommand(ctx, ev)
		output = out
		if err != nil {
			errs = append(errs, fmt.Errorf("command %q: %w", h.Command[0], err))
		}
	}
	if h.Webhook != "" {
		if err := h.post(ctx, ev); err != nil {
			// The URL may hold a token (in its user, path or query): it is
			// logged redacted, as /config shows it.
			errs = append(errs, fmt.Errorf("webhook %s: %w", config.RedactURL(h.Webhook), err))
		}
	}
	if len(errs) > 0 {
		return output, errs[0]
	}
	return output, nil
}

func (h *Hook) runCommand(ctx context.Context, ev Event) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.Command[0], h.Command[1:]...)
	cmd.Env = append(os.Environ(),
		"ATTACHE_CLUSTER="+ev.Cluster, "ATTACHE_OLD_PRIMARY="+ev.OldPrimary, "ATTACHE_NEW_PRIMARY="+ev.NewPrimary,
		"ATTACHE_FAILOVER_TIME="+ev.Time.UTC().Format(time.RFC3339Nano))
	// Its own process group, killed whole at the timeout: a script's
	// children go with it rather than hold its output pipe open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out := &limited{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("killed after timeout %s", h.Timeout)
	}
	return out.b.String(), err
}

func (h *Hook) post(ctx context.Context, ev Event) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	body, _ := json.Marshal(ev)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.Webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "attache-on-failover")
	client := h.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return ue.Err // without the URL
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// limited keeps the first max bytes written to it.
type limited struct {
	b   bytes.Buffer
	max int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Watcher follows the primary of one cluster. Observe and Run may be
// called concurrently.
type Watcher struct {
	cluster *upstream.Cluster
	hook    *Hook // nil: changes are only logged
	log     *slog.Logger
	now     func() time.Time

	// OnChange and OnHook, when set (before Observe and Run are first
	// called), are told of each failover and each hook's outcome: metrics.
	OnChange func(Event)
	OnHook   func(Event, error)

	mu      sync.Mutex
	primary string // the last endpoint seen as the one primary
	lost    bool   // no primary since then (logged once)
	events  chan Event
}

// NewWatcher returns a Watcher of c; hook may be nil.
func NewWatcher(c *upstream.Cluster, hook *Hook, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cluster: c, hook: hook, log: log, now: time.Now, events: make(chan Event, 16)}
}

// Inherit takes the last primary seen by old, the watcher of an earlier
// generation of the same cluster. Call it before the first Observe.
func (w *Watcher) Inherit(old *Watcher) {
	old.mu.Lock()
	p, lost := old.primary, old.lost
	old.mu.Unlock()
	w.mu.Lock()
	w.primary, w.lost = p, lost
	w.mu.Unlock()
}

// Observe compares the cluster's primary with the one seen last. The first
// primary learned is no failover; a different endpoint claiming primary
// alone later is one, queued for the hook. Nothing is decided while no
// endpoint or several (a split brain) claim primary. It never blocks.
func (w *Watcher) Observe() {
	claims := w.cluster.Primaries()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(claims) != 1 {
		if len(claims) == 0 && w.primary != "" && !w.lost {
			w.lost = true
			w.log.Warn("no primary", "cluster", w.cluster.Name(), "last_primary", w.primary)
		}
		return
	}
	cur := claims[0].Addr
	w.lost = false
	if cur == w.primary {
		return
	}
	old := w.primary
	w.primary = cur
	if old == "" {
		w.log.Info("primary learned", "cluster", w.cluster.Name(), "primary", cur)
		return
	}
	ev := Event{Cluster: w.cluster.Name(), OldPrimary: old, NewPrimary: cur, Time: w.now()}
	w.log.Warn("primary changed", "cluster", ev.Cluster, "old_primary", old, "new_primary", cur)
	if w.OnChange != nil {
		w.OnChange(ev)
	}
	if w.hook == nil {
		return
	}
	select {
	case w.events <- ev:
	default:
		w.log.Error("on_failover: too many failovers queued; this one is not run", "cluster", ev.Cluster,
			"old_primary", old, "new_primary", cur)
	}
}

// Run runs the hook for each queued event, one at a time, until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.events:
			start := time.Now()
			out, err := w.hook.Run(ctx, ev)
			args := []any{"cluster", ev.Cluster, "old_primary", ev.OldPrimary, "new_primary", ev.NewPrimary,
				"took", time.Since(start).Round(time.Millisecond)}
			if out != "" {
				args = append(args, "output", out)
			}
			if err != nil {
				w.log.Error("on_failover failed", append(args, "error", err)...)
			} else {
				w.log.Info("on_failover done", args...)
			}
			if w.OnHook != nil {
				w.OnHook(ev, err)
			}
		}
	}
}
