// Package admin serves attache's admin HTTP endpoints: /health (the process
// is alive), /ready (traffic can flow), /started (every listener bound, the
// first configuration applied), /metrics (Prometheus), /config (the running
// configuration, secrets redacted), /status (JSON state of every listener,
// cluster and endpoint), GET / (the same snapshot as an HTML page) and POST
// /reload. It listens on loopback unless the
// configuration says otherwise. The probe server (ProbeHandler) serves the
// first three only, read-only, for a kubelet on another address.
package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Source is what the admin server reports on. Its methods are called
// concurrently from request goroutines.
type Source interface {
	// Ready reports whether traffic can flow; when not, reasons says what
	// is missing. When ok, reasons may hold notes on a degraded state that
	// still serves (a discovery source that cannot be read).
	Ready() (ok bool, reasons []string)
	// Started reports whether every listener is bound and the first
	// configuration applied.
	Started() bool
	// ConfigYAML renders the running configuration, secrets redacted.
	ConfigYAML() ([]byte, error)
	// Status returns a JSON-encodable snapshot of the runtime. GET /
	// renders its JSON; the keys the page reads are app.Status's.
	Status() any
	// Reload loads the configuration file again.
	Reload() error
}

// Handler returns the admin mux.
func Handler(src Source, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	probes(mux, src, true)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		b, err := src.ConfigYAML()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(b)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(src.Status())
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		if err := src.Reload(); err != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "reload failed; the running configuration is unchanged:\n%v\n", err)
			return
		}
		fmt.Fprintln(w, "reloaded")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { servePage(w, src) })
	return mux
}

// ProbeHandler returns the probe server's mux: GET (and HEAD) /health,
// /ready and /started, as on the admin server, and nothing else: any other
// path is 404, any other method 405. It changes nothing and reveals no
// configuration (/ready says "not ready" without the reasons, which name
// clusters and endpoints; the admin server's /ready has them), so it may
// listen where the kubelet reaches it.
func ProbeHandler(src Source) http.Handler {
	mux := http.NewServeMux()
	probes(mux, src, false)
	return mux
}

// probes adds the probe endpoints to mux; detail adds /ready's reasons.
func probes(mux *http.ServeMux, src Source, detail bool) {
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		ok, reasons := src.Ready()
		if !detail {
			reasons = nil
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok && !detail {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready:\n%s\n", strings.Join(reasons, "\n"))
			return
		}
		fmt.Fprintln(w, "ready")
		for _, r := range reasons {
			fmt.Fprintln(w, r)
		}
	})
	mux.HandleFunc("GET /started", func(w http.ResponseWriter, _ *http.Request) {
		if !src.Started() {
			http.Error(w, "not started", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "started")
	})
}
