package httpproxy

import (
	"fmt"
	"net"
	"net/http"
	"path"
	"regexp"
	"strings"

	"github.com/attache-proxy/attache/internal/config"
)

// Filter is kubectl proxy's request filter, for a kubernetes_api cluster:
// a request is refused unless its path matches an accept pattern and no
// reject pattern, and its Host (without the port) matches an accept-host
// pattern. The patterns are unanchored regular expressions, as kubectl's
// are; a reject pattern is also tried on the cleaned path, so that
// "//api/v1/../v1/namespaces/x/pods/y/exec" cannot slip past "^/api/".
type Filter struct {
	acceptPaths, rejectPaths, acceptHosts []*regexp.Regexp
}

// NewFilter compiles k's patterns (validated already).
func NewFilter(k config.KubernetesAPI) *Filter {
	compile := func(res []string) []*regexp.Regexp {
		out := make([]*regexp.Regexp, len(res))
		for i, re := range res {
			out[i] = regexp.MustCompile(re)
		}
		return out
	}
	return &Filter{acceptPaths: compile(k.AcceptPaths), rejectPaths: compile(k.RejectPaths), acceptHosts: compile(k.AcceptHosts)}
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
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
	switch {
	case anyMatch(f.rejectPaths, p) || anyMatch(f.rejectPaths, path.Clean("/"+p)):
		return "path rejected", fmt.Sprintf("path %s matches reject_paths", p)
	case !anyMatch(f.acceptPaths, p):
		return "path rejected", fmt.Sprintf("path %s matches no accept_paths", p)
	case !anyMatch(f.acceptHosts, host):
		return "host rejected", fmt.Sprintf("host %q matches no accept_hosts", host)
	}
	return "", ""
}

// upstreamPath is the path a request for p is sent upstream with on
// route rt.
func (rt *Route) upstreamPath(p string) string {
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
