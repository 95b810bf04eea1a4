package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// SANMatch is one entry of a match_san list: a name the peer's certificate
// must present as a subject alternative name, in the style of Envoy's
// match_typed_subject_alt_names. Exactly one field is set:
//
//   - DNS: a DNS name, compared without regard to case; a wildcard
//     certificate name (*.shop.svc) covers one label, as in RFC 6125.
//   - URI: a URI compared byte for byte, such as a SPIFFE ID
//     (spiffe://cluster.local/ns/shop/sa/orders).
//   - URIPrefix: a URI prefix ending in "/" (spiffe://cluster.local/ns/shop/:
//     every service account of a namespace).
//   - IP: an IP address, compared as an address (::ffff:10.0.0.1 is 10.0.0.1).
//
// A peer is accepted when any of its names matches any entry.
type SANMatch struct {
	DNS       string `yaml:"dns"`
	URI       string `yaml:"uri"`
	URIPrefix string `yaml:"uri_prefix"`
	IP        string `yaml:"ip"`
}

// String is the entry as "kind:value", the way logs show what was expected.
func (m SANMatch) String() string {
	k, v := m.kind()
	return k + ":" + v
}

// kind returns the set field's YAML name and value (the first set one,
// for an entry validate refused).
func (m SANMatch) kind() (string, string) {
	switch {
	case m.DNS != "":
		return "dns", m.DNS
	case m.URI != "":
		return "uri", m.URI
	case m.URIPrefix != "":
		return "uri_prefix", m.URIPrefix
	default:
		return "ip", m.IP
	}
}

// MarshalYAML renders only the field that is set, so that the rendered
// configuration reads like the file and loads again.
func (m SANMatch) MarshalYAML() (any, error) {
	k, v := m.kind()
	return map[string]string{k: v}, nil
}

// matchSAN checks a match_san list written at path. An empty list is no
// list (the rendered configuration writes an unset one as []).
func (v *validator) matchSAN(path string, ms []SANMatch) {
	for i, m := range ms {
		p := fmt.Sprintf("%s[%d]", path, i)
		n := 0
		for _, s := range []string{m.DNS, m.URI, m.URIPrefix, m.IP} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			v.errorf(p, "give exactly one of dns, uri, uri_prefix or ip")
			continue
		}
		switch {
		case m.DNS != "":
			if msg := checkDNSName(m.DNS); msg != "" {
				v.errorf(p+".dns", "%q: %s", m.DNS, msg)
			}
		case m.URI != "":
			if msg := checkSANURI(m.URI); msg != "" {
				v.errorf(p+".uri", "%q: %s", m.URI, msg)
			}
		case m.URIPrefix != "":
			if msg := checkSANURI(m.URIPrefix); msg != "" {
				v.errorf(p+".uri_prefix", "%q: %s", m.URIPrefix, msg)
			} else if !strings.HasSuffix(m.URIPrefix, "/") {
				v.errorf(p+".uri_prefix", "%q: must end with \"/\", so that a prefix spiffe://td/ns/shop/ cannot also match spiffe://td/ns/shopping/; for one name use uri", m.URIPrefix)
			}
		case m.IP != "":
			if _, err := netip.ParseAddr(m.IP); err != nil || strings.Contains(m.IP, "%") {
				v.errorf(p+".ip", "%q is not an IP address", m.IP)
			}
		}
	}
}

// checkDNSName returns why s is not a DNS name a certificate can present,
// or "".
func checkDNSName(s string) string {
	if strings.Contains(s, "*") {
		return "wildcards belong in certificates, not in match_san; list the name the peer must cover"
	}
	if len(s) > 253 || strings.HasSuffix(s, ".") {
		return "want a DNS name without a trailing dot, at most 253 characters"
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "want dot-separated labels of 1-63 letters, digits, '-' and '_'"
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return "want dot-separated labels of 1-63 letters, digits, '-' and '_'"
			}
		}
	}
	return ""
}

// checkSANURI returns why s is not an absolute URI, or "".
func checkSANURI(s string) string {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return "holds a space or control character"
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return "want an absolute URI such as spiffe://cluster.local/ns/shop/sa/orders"
	}
	if u.Scheme == "spiffe" && (u.Host == "" || u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "") {
		return "a SPIFFE ID is spiffe://<trust domain>/<path>, without user, port, query or fragment"
	}
	return ""
}
