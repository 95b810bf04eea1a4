package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// wireValues checks every value of the file that attache writes into a
// protocol: a byte that ends a header line, a C string or a URI component
// there would let the file inject a second header, request or startup
// parameter. Secret values are never quoted in an error.
func (v *validator) wireValues() {
	for i, cl := range v.c.Clusters {
		p := fmt.Sprintf("clusters[%d]", i)
		if t := cl.TLS; t != nil && cl.KubernetesAPI == nil {
			v.serverName(p+".tls.server_name", t.ServerName)
		}
		if k := cl.KubernetesAPI; k != nil {
			v.serverName(p+".kubernetes_api.host", k.Host) // the endpoint and the name verified
		}
		if h := cl.HealthCheck; h != nil {
			hp := p + ".health_check"
			if h.Type == "http" && strings.HasPrefix(h.Path, "/") && !validRequestTarget(h.Path) {
				v.errorf(hp+".path", "%q: want a path (and query) of URI characters (RFC 3986), without spaces or control characters", h.Path)
			}
			if h.Host != "" && !validAuthority(h.Host) {
				v.errorf(hp+".host", "%q: want host or host:port (RFC 9110 7.2)", h.Host)
			}
			v.cString(hp+".user", h.User, true)
			v.cString(hp+".database", h.Database, true)
			v.cString(hp+".password", h.Password, false)
		}
	}
}

// cString checks a value sent as a NUL-terminated string of the
// PostgreSQL protocol (startup parameters, passwords, queries): a NUL
// would end it early and start another parameter. show quotes the value.
func (v *validator) cString(path, s string, show bool) {
	if !strings.Contains(s, "\x00") {
		return
	}
	if show {
		v.errorf(path, "%q: must not contain NUL (it ends a string of the PostgreSQL protocol)", s)
		return
	}
	v.errorf(path, "must not contain NUL (it ends a string of the PostgreSQL protocol)")
}

// serverName checks a TLS server name: the SNI host_name and the name the
// certificate is verified against, a DNS name or an IP address.
func (v *validator) serverName(path, s string) {
	if s != "" && net.ParseIP(s) == nil && (len(s) > 253 || !dnsName.MatchString(s)) {
		v.errorf(path, "%q: want a DNS name or an IP address", s)
	}
}

var (
	dnsName = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$`)
	// authority is uri-host [":" port] as a Host header carries it: a
	// reg-name of unreserved characters, or a bracketed IPv6 address.
	authority = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(:[0-9]{1,5})?$`)
	// pathChars are pchar and "/" (RFC 3986 3.3); queryChars add "?".
	pathChars  = regexp.MustCompile(`^[A-Za-z0-9._~!$&'()*+,;=:@/%-]*$`)
	queryChars = regexp.MustCompile(`^[A-Za-z0-9._~!$&'()*+,;=:@/%?-]*$`)
)

func validAuthority(s string) bool { return authority.MatchString(s) }

// validPath reports whether s is an absolute path of URI characters with
// well-formed percent escapes.
func validPath(s string) bool {
	_, err := url.PathUnescape(s)
	return pathChars.MatchString(s) && err == nil
}

// validRequestTarget is validPath with an optional query.
func validRequestTarget(s string) bool {
	path, query, _ := strings.Cut(s, "?")
	_, err := url.QueryUnescape(query)
	return validPath(path) && queryChars.MatchString(query) && err == nil
}
