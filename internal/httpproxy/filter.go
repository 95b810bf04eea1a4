package httpproxy

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"

	"github.com/attache-proxy/attache/internal/config"
)

// Filter is kubectl proxy's request filter, for a kubernetes_api cluster:
// a request is refused unless its path matches an accept pattern and no
// reject pattern, and its Host (without the port) matches an accept-host
// pattern. The patterns are unanchored regular expressions, as kubectl's
// are, compiled with (?s) so that "." also matches a newline (a %0A in
// the path); reject patterns also ignore case.
//
// Paths are matched decoded (r.URL.Path: %2F is a "/"), as the API server
// routes them. So that no spelling of a rejected path gets through, a
// path with a control character is refused, and the path, its cleaned
// form ("//", "." and ".." segments resolved) and both decoded once more
// must each match an accept pattern and no reject pattern.
type Filter struct {
	acceptPaths, rejectPaths, acceptHosts []*regexp.Regexp
}

// NewFilter compiles k's patterns (validated already).
func NewFilter(k config.KubernetesAPI) *Filter {
	compile := func(flags string, res []string) []*regexp.Regexp {
		out := make([]*regexp.Regexp, len(res))
		for i, re := range res {
			out[i] = regexp.MustCompile(flags + re)
		}
		return out
	}
	return &Filter{acceptPaths: compile("(?s)", k.AcceptPaths), rejectPaths: compile("(?is)", k.RejectPaths), acceptHosts: compile("", k.AcceptHosts)}
}

func anyMatch(res []*regexp.Regexp, forms ...string) bool {
	for _, re := range res {
		for _, s := range forms {
			if re.MatchString(s) {
				return true
			}
		}
	}
	return false
}

// eachMatched reports whether every form matches some pattern.
func eachMatched(res []*regexp.Regexp, forms ...string) bool {
	for _, s := range forms {
		if !anyMatch(res, s) {
			return false
		}
	}
	return true
}

// hasControl reports whether p holds a byte below 0x20 or DEL: no
// Kubernetes object name or API path has one.
func hasControl(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return true
		}
	}
	return false
}

// refuse returns why a request for path (as sent upstream) with the Host
// header host is refused, or "" when it may pass. A nil Filter passes all.
func (f *Filter) refuse(p, host string) (reason, detail string) {
	if f == nil {
		return "", ""
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]" // as kubectl matches it: ^\[::1\]$
		}
	}
	forms := []string{p, path.Clean("/" + p)}
	if u, err := url.PathUnescape(p); err == nil && u != p {
		forms = append(forms, u, path.Clean("/"+u))
	}
	switch {
	case hasControl(p):
		return "path rejected", fmt.Sprintf("path %q holds a control character", p)
	case anyMatch(f.rejectPaths, forms...):
		return "path rejected", fmt.Sprintf("path %s matches reject_paths", p)
	case !eachMatched(f.acceptPaths, forms...):
		return "path rejected", fmt.Sprintf("path %s matches no accept_paths", p)
	case !anyMatch(f.acceptHosts, host):
		return "host rejected", fmt.Sprintf("host %q matches no accept_hosts", host)
	}
	return "", ""
}

// upstreamPath is the path a request for p is sent upstream with on
// route rt.
func (rt *compiledRoute) upstreamPath(p string) string {
	if rw := rt.rewrite; rw != nil && rw.Prefix != "" && rt.prefix != "" {
		return rw.Prefix + strings.TrimPrefix(p, rt.prefix)
	}
	return p
}

// refused answers a request the cluster's filter refuses: 403 from attache
// itself, as kubectl proxy answers, with x-attache-reason.
func (h *Handler) refused(w http.ResponseWriter, x *exchange, reason, detail string) {
	x.reason = reason
	w.Header().Set("X-Attache-Reason", reason)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprintf(w, "attache: %s (cluster %s): %s\n", reason, x.cluster.Name(), detail)
}
