package config

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// applyKubernetesAPI fills the endpoint, tls and credentials of every
// kubernetes_api cluster from the environment and its own fields, before
// the other defaults apply, so that the rest of attache sees an ordinary
// HTTPS cluster with a bearer token. Problems with the environment are
// returned; the rest is checked by validate.
func (c *Config) applyKubernetesAPI(lookupEnv func(string) (string, bool)) Errors {
	var errs Errors
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		k := cl.KubernetesAPI
		if k == nil {
			continue
		}
		p := fmt.Sprintf("clusters[%d].kubernetes_api", i)
		env := func(name string) string {
			if lookupEnv == nil {
				return ""
			}
			v, _ := lookupEnv(name)
			return strings.TrimSpace(v)
		}
		if k.Host == "" {
			k.Host = env("KUBERNETES_SERVICE_HOST")
			if k.Host == "" {
				errs = append(errs, Error{Path: p + ".host", Line: c.Line(p), Msg: "KUBERNETES_SERVICE_HOST is not set (is attache running in a pod?); set host and port"})
			}
		}
		// An IPv6 address may be written bracketed; it is kept bare and
		// bracketed again in the endpoint.
		k.Host = strings.TrimSuffix(strings.TrimPrefix(k.Host, "["), "]")
		if k.Port == 0 && !c.has(p+".port") {
			switch v := env("KUBERNETES_SERVICE_PORT"); {
			case v == "":
				errs = append(errs, Error{Path: p + ".port", Line: c.Line(p), Msg: "KUBERNETES_SERVICE_PORT is not set (is attache running in a pod?); set port"})
				k.Port = -1
			default:
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 65535 {
					errs = append(errs, Error{Path: p + ".port", Line: c.Line(p), Msg: fmt.Sprintf("KUBERNETES_SERVICE_PORT %q is not a port number", v)})
					n = -1
				}
				k.Port = n
			}
		}
		if k.TokenFile == "" {
			k.TokenFile = DefaultServiceAccountDir + "/token"
		}
		if k.CAFile == "" {
			k.CAFile = DefaultServiceAccountDir + "/ca.crt"
		}
		if k.AcceptPaths == nil && !c.has(p+".accept_paths") {
			k.AcceptPaths = DefaultKubeAcceptPaths
		}
		if k.RejectPaths == nil && !c.has(p+".reject_paths") {
			k.RejectPaths = DefaultKubeRejectPaths
		}
		if k.AcceptHosts == nil && !c.has(p+".accept_hosts") {
			k.AcceptHosts = DefaultKubeAcceptHosts
		}
		if len(cl.Endpoints) == 0 && cl.Discovery == nil && k.Host != "" && k.Port > 0 {
			cl.Endpoints = []Endpoint{{Address: net.JoinHostPort(k.Host, strconv.Itoa(k.Port)), Weight: 1}}
		}
		if cl.TLS == nil {
			cl.TLS = &ClientTLS{CAFile: k.CAFile}
		}
		if cl.Credentials == nil {
			cl.Credentials = &Credentials{BearerTokenFile: k.TokenFile}
		}
	}
	return errs
}

// kubernetesAPI checks a kubernetes_api cluster: it owns the endpoint, TLS
// and credentials of its cluster, so those may not be written beside it.
func (v *validator) kubernetesAPI(p string, cl *Cluster) {
	k := cl.KubernetesAPI
	kp := p + ".kubernetes_api"
	for _, f := range []string{"endpoints", "discovery", "tls", "credentials"} {
		if v.c.has(p + "." + f) {
			v.errorf(p+"."+f, "comes from kubernetes_api; remove it (kubernetes_api has host, port, ca_file and token_file)")
		}
	}
	if k.Port != -1 && (k.Port < 1 || k.Port > 65535) {
		v.errorf(kp+".port", "must be 1-65535")
	}
	v.secretFile(kp+".token_file", k.TokenFile, "the service-account token is mounted there unless automountServiceAccountToken is false")
	v.file(kp+".ca_file", k.CAFile)
	for _, f := range []struct {
		name string
		res  []string
		open bool // an empty list is allowed
	}{{"accept_paths", k.AcceptPaths, false}, {"reject_paths", k.RejectPaths, true}, {"accept_hosts", k.AcceptHosts, false}} {
		if len(f.res) == 0 && !f.open {
			v.errorf(kp+"."+f.name, "must not be empty: nothing would be accepted (\"^.*\" accepts everything)")
		}
		for j, re := range f.res {
			if _, err := regexp.Compile(re); err != nil {
				v.errorf(fmt.Sprintf("%s.%s[%d]", kp, f.name, j), "%v", err)
			}
		}
	}
}

// credentials checks a cluster's credentials. Files must exist and hold a
// value at start; later changes are followed at run time.
func (v *validator) credentials(p string, cr *Credentials) {
	cp := p + ".credentials"
	if cr.BearerTokenFile == "" && cr.Basic == nil && len(cr.Headers) == 0 {
		v.errorf(cp, "needs bearer_token_file, basic or headers")
	}
	if cr.BearerTokenFile != "" && cr.Basic != nil {
		v.errorf(cp+".basic", "give bearer_token_file or basic, not both (both are the Authorization header)")
	}
	if cr.BearerTokenFile != "" || v.c.has(cp+".bearer_token_file") {
		v.secretFile(cp+".bearer_token_file", cr.BearerTokenFile, "")
	}
	if b := cr.Basic; b != nil {
		bp := cp + ".basic"
		switch {
		case b.Username == "":
			v.errorf(bp+".username", "required")
		case strings.ContainsAny(b.Username, ":\r\n"):
			v.errorf(bp+".username", "must not contain ':' or a line break (RFC 7617)")
		}
		v.secretFile(bp+".password_file", b.PasswordFile, "")
	}
	for name, val := range cr.Headers {
		hp := cp + ".headers." + name
		switch canon := http.CanonicalHeaderKey(name); {
		case !tokenPattern.MatchString(name):
			v.errorf(hp, "invalid header name")
		case canon == "Authorization" && (cr.BearerTokenFile != "" || cr.Basic != nil):
			v.errorf(hp, "Authorization is already set by bearer_token_file or basic")
		case unsettable[canon]:
			v.errorf(hp, "%s cannot be set as a credential", canon)
		case val == "":
			v.errorf(hp, "empty value")
		case !validHeaderValue(val):
			v.errorf(hp, "the value holds a line break or a control character") // never the value itself: it is a secret
		}
	}
}

// unsettable are headers that frame or route the request, not credentials.
var unsettable = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Upgrade": true, "Te": true, "Trailer": true, "Keep-Alive": true, "Proxy-Connection": true, "Expect": true}

// secretFile checks a file holding a token or password: it must exist and
// hold a value that fits in a header. hint, when set, follows a missing
// file. The content is never part of an error.
func (v *validator) secretFile(path, name, hint string) {
	if name == "" {
		v.errorf(path, "required")
		return
	}
	b, err := os.ReadFile(name)
	switch {
	case os.IsNotExist(err) && hint != "":
		v.errorf(path, "no such file %q (%s)", name, hint)
	case os.IsNotExist(err):
		v.errorf(path, "no such file %q", name)
	case err != nil:
		v.errorf(path, "%v", err)
	case TrimSecret(b) == "":
		v.errorf(path, "file %q is empty", name)
	case !validHeaderValue(TrimSecret(b)):
		v.errorf(path, "file %q holds a line break or a control character inside its value", name)
	}
}

// validHeaderValue reports whether s can be sent as a header value.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// TrimSecret is the value of a token or password file: its content
// without the line break(s) an editor or `echo` leaves at the end.
func TrimSecret(b []byte) string { return strings.TrimRight(string(b), "\r\n") }

// httpOnly reports credentials and kubernetes_api on a cluster that a
// non-HTTP listener uses: they are HTTP headers and filters.
func (v *validator) httpOnly(p string, cl *Cluster, l Listener) {
	for _, f := range []struct {
		name string
		set  bool
	}{{"credentials", cl.Credentials != nil && cl.KubernetesAPI == nil}, {"kubernetes_api", cl.KubernetesAPI != nil}} {
		if f.set {
			v.errorf(p+"."+f.name, "only for HTTP: listener %q (protocol %s) uses this cluster", l.Name, l.Protocol)
		}
	}
}

// clusterIndex is the position of the cluster named name, or -1.
func (c *Config) clusterIndex(name string) int {
	for i := range c.Clusters {
		if c.Clusters[i].Name == name {
			return i
		}
	}
	return -1
}
