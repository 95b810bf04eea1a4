package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/attache-proxy/attache/internal/config"
)

// maxShownNames bounds how many of a peer's names a Rejection keeps: a
// certificate may carry thousands, and they end up in a log line.
const maxShownNames = 16

// Matcher checks a peer certificate's subject alternative names against
// a match_san list. It checks names only: the chain must be verified
// before. A nil *Matcher accepts every certificate. It is immutable and
// safe for concurrent use.
type Matcher struct {
	dns      []string // lower case
	uri      []string
	prefix   []string
	ip       []netip.Addr
	expected []string
}

// NewMatcher compiles a match_san list that validate accepted; nil when
// the list is empty.
func NewMatcher(ms []config.SANMatch) *Matcher {
	if len(ms) == 0 {
		return nil
	}
	m := &Matcher{}
	for _, s := range ms {
		m.expected = append(m.expected, s.String())
		switch {
		case s.DNS != "":
			m.dns = append(m.dns, strings.ToLower(s.DNS))
		case s.URI != "":
			m.uri = append(m.uri, s.URI)
		case s.URIPrefix != "":
			m.prefix = append(m.prefix, s.URIPrefix)
		case s.IP != "":
			if a, err := netip.ParseAddr(s.IP); err == nil {
				m.ip = append(m.ip, a.Unmap())
			}
		}
	}
	return m
}

// Rejection is a peer certificate that presented none of the names
// match_san expects.
type Rejection struct {
	Peer      string   // the peer's address
	Presented []string // the certificate's names, "dns:…", "uri:…", "ip:…"; at most maxShownNames, then "(N more)"
	Expected  []string // the match_san entries, "dns:…", "uri:…", "uri_prefix:…", "ip:…"
}

func (r *Rejection) Error() string {
	presented := "no names"
	if len(r.Presented) > 0 {
		presented = strings.Join(r.Presented, ", ")
	}
	return fmt.Sprintf("peer %s presented %s; match_san wants %s", r.Peer, presented, strings.Join(r.Expected, " or "))
}

// Check returns nil when cert presents a name that m expects, or else a
// *Rejection naming peer.
func (m *Matcher) Check(peer string, cert *x509.Certificate) error {
	if m == nil || m.matches(cert) {
		return nil
	}
	return &Rejection{Peer: peer, Presented: Names(cert), Expected: m.expected}
}

func (m *Matcher) matches(cert *x509.Certificate) bool {
	for _, san := range cert.DNSNames {
		for _, want := range m.dns {
			if dnsMatch(want, san) {
				return true
			}
		}
	}
	for _, u := range cert.URIs {
		s := u.String()
		for _, want := range m.uri {
			if s == want {
				return true
			}
		}
		if len(m.prefix) == 0 || !plainPath(u) {
			continue
		}
		for _, want := range m.prefix {
			if strings.HasPrefix(s, want) {
				return true
			}
		}
	}
	for _, ip := range cert.IPAddresses {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		for _, want := range m.ip {
			if a.Unmap() == want {
				return true
			}
		}
	}
	return false
}

// VerifyConnection returns a tls.Config.VerifyConnection that checks the
// peer's leaf certificate, for a configuration whose chain verification is
// done by crypto/tls (or by VerifyPeerCertificate). A rejection is passed
// to report (when not nil) and fails the handshake. Nil for a nil m.
func (m *Matcher) VerifyConnection(peer string, report func(*Rejection)) func(tls.ConnectionState) error {
	if m == nil {
		return nil
	}
	return func(cs tls.ConnectionState) error {
		var cert *x509.Certificate
		if len(cs.PeerCertificates) > 0 {
			cert = cs.PeerCertificates[0]
		} else {
			cert = &x509.Certificate{}
		}
		err := m.Check(peer, cert)
		var r *Rejection
		if errors.As(err, &r) && report != nil {
			report(r)
		}
		return err
	}
}

// dnsMatch reports whether a certificate's DNS name san covers want (lower
// case): equal without regard to case, or a wildcard "*.rest" whose rest
// is want without its first label (RFC 6125 6.4.3, as crypto/tls and
// Envoy match).
func dnsMatch(want, san string) bool {
	san = strings.ToLower(strings.TrimSuffix(san, "."))
	if san == want {
		return true
	}
	rest, ok := strings.CutPrefix(san, "*.")
	if !ok || rest == "" || strings.Contains(rest, "*") {
		return false
	}
	_, wantRest, found := strings.Cut(want, ".")
	return found && wantRest == rest
}

// plainPath reports whether a URI's path is free of dot segments and
// escapes, so that a prefix means what it reads: a certificate for
// spiffe://td/ns/shop/../kube-system/sa/x is not under spiffe://td/ns/shop/.
// (SPIFFE IDs may hold neither.)
func plainPath(u *url.URL) bool {
	if u.RawPath != "" || strings.Contains(u.String(), "%") {
		return false
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// Names returns a certificate's subject alternative names as "dns:…",
// "uri:…", "ip:…" and "email:…" (its common name as "cn:…" when it has
// none), at most maxShownNames of them.
func Names(cert *x509.Certificate) []string {
	var out []string
	for _, s := range cert.DNSNames {
		out = append(out, "dns:"+s)
	}
	for _, u := range cert.URIs {
		out = append(out, "uri:"+u.String())
	}
	for _, ip := range cert.IPAddresses {
		out = append(out, "ip:"+ip.String())
	}
	for _, e := range cert.EmailAddresses {
		out = append(out, "email:"+e)
	}
	if len(out) == 0 && cert.Subject.CommonName != "" {
		out = append(out, "cn:"+cert.Subject.CommonName)
	}
	if len(out) > maxShownNames {
		out = append(out[:maxShownNames], fmt.Sprintf("(%d more)", len(out)-maxShownNames))
	}
	for i, s := range out {
		out[i] = printable(s)
	}
	return out
}

// printable bounds a name from a certificate and escapes what a log line
// should not carry.
func printable(s string) string {
	const max = 256
	if len(s) > max {
		s = s[:max] + "…"
	}
	if strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) < 0 {
		return s
	}
	return strings.Trim(fmt.Sprintf("%q", s), `"`)
}
