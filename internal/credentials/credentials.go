// Package credentials holds what an HTTP cluster adds to every request: a
// bearer token or a Basic password read from files, and fixed headers.
//
// Files are re-read on Reload, which the app calls when a file watch sees
// them change: projected service-account tokens are rotated by the kubelet
// (bound tokens expire, an hour by default), so a value read once would
// start failing. A file that goes missing, empty or unreadable keeps its
// last value and Reload reports it; the next good content takes over.
//
// Values never appear in errors: they are secrets.
package credentials

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/attache-proxy/attache/internal/config"
)

// Header is one header to set on a request, its name in canonical form.
type Header struct{ Name, Value string }

// Set is the credentials of one cluster. Headers may be called
// concurrently with Reload and from any goroutine.
type Set struct {
	cfg  config.Credentials
	cur  atomic.Pointer[[]Header]
	mu   sync.Mutex        // serialises Reload
	last map[string]string // file -> its last good value
}

// New reads the files of cfg; any that cannot be read, or is empty, is an
// error.
func New(cfg config.Credentials) (*Set, error) {
	s := &Set{cfg: cfg, last: map[string]string{}}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads the files. A file that fails keeps its previous value;
// the error names it.
func (s *Set) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, f := range s.Files() {
		v, err := read(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.last[f] = v
	}
	if _, ok := s.last[s.cfg.BearerTokenFile]; s.cfg.BearerTokenFile != "" && !ok {
		return errors.Join(errs...)
	}
	if b := s.cfg.Basic; b != nil {
		if _, ok := s.last[b.PasswordFile]; !ok {
			return errors.Join(errs...)
		}
	}
	var hs []Header
	switch {
	case s.cfg.BearerTokenFile != "":
		hs = append(hs, Header{"Authorization", "Bearer " + s.last[s.cfg.BearerTokenFile]})
	case s.cfg.Basic != nil:
		b := s.cfg.Basic
		hs = append(hs, Header{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(b.Username+":"+s.last[b.PasswordFile]))})
	}
	for k, v := range s.cfg.Headers {
		hs = append(hs, Header{http.CanonicalHeaderKey(k), v})
	}
	s.cur.Store(&hs)
	return errors.Join(errs...)
}

func read(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err // names the file, never holds its content
	}
	v := config.TrimSecret(b)
	switch {
	case v == "":
		return "", fmt.Errorf("%s is empty", file)
	case strings.ContainsAny(v, "\r\n\x00"):
		return "", fmt.Errorf("%s holds a line break inside its value", file)
	}
	return v, nil
}

// Headers returns the headers to set, with the latest values read. The
// slice is shared: do not change it.
func (s *Set) Headers() []Header {
	if s == nil {
		return nil
	}
	return *s.cur.Load()
}

// Sets reports whether the set writes the header name (any case): a header
// of that name from the application is replaced.
func (s *Set) Sets(name string) bool {
	for _, h := range s.Headers() {
		if strings.EqualFold(h.Name, name) {
			return true
		}
	}
	return false
}

// Files returns the files to watch.
func (s *Set) Files() []string {
	var fs []string
	if s.cfg.BearerTokenFile != "" {
		fs = append(fs, s.cfg.BearerTokenFile)
	}
	if b := s.cfg.Basic; b != nil && b.PasswordFile != "" {
		fs = append(fs, b.PasswordFile)
	}
	return fs
}
