package httpproxy

import (
	"net/netip"
	"strings"
)

// The end user of a request, for sticky splits. As a sidecar attache's
// peer is the application, on loopback, so the peer's address says
// nothing about who the request is for; the application's inbound proxies
// (an ingress, a load balancer, the application itself) name the end user
// in X-Forwarded-For or Forwarded (RFC 7239). Each hop appends the address
// of its own peer, so only the entries appended by hops attache trusts are
// true: the header is read right to left, from attache's peer, skipping
// trusted addresses, and the first untrusted address is the end user (as
// Envoy's xff_num_trusted_hops, HAProxy and nginx's real_ip_recursive do).
// What a client wrote to the left of that is never read.
//
// The header is read as the application sent it, before attache replaces
// X-Forwarded-For with its peer's address and drops Forwarded on the way
// upstream.

// trust is who may name the end user: the proxies trusted to have
// appended a true entry to the forwarded header, and which header.
type trust struct {
	proxies   []netip.Prefix
	header    string // as http.Header keys it
	forwarded bool   // header is RFC 7239 Forwarded; otherwise a list of addresses
}

// trusted reports whether a (unmapped, without a zone) is a trusted proxy.
func (t *trust) trusted(a netip.Addr) bool {
	for _, p := range t.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// hopKind is what one entry of a forwarded header says.
type hopKind uint8

const (
	hopAddr      hopKind = iota // an address, trusted or not (parseNode's answer; add decides)
	hopTrusted                  // the address of a trusted proxy
	hopUntrusted                // an address attache does not trust: a candidate end user
	hopUnknown                  // "unknown", an obfuscated identifier, or an element without for=
	hopMalformed                // not an entry that parses
)

// hopScan reads the entries of a forwarded header left to right and keeps
// what the right-to-left walk needs: the last entry that is not a trusted
// address, and the first entry.
type hopScan struct {
	t       *trust
	n       int        // entries seen
	first   netip.Addr // the first entry's address, when it had one
	last    hopKind    // the kind of the last entry not hopTrusted
	lastOK  bool       // there is such an entry
	lastFor netip.Addr // its address, when hopUntrusted
}

func (s *hopScan) add(k hopKind, a netip.Addr) {
	if k == hopAddr {
		a = a.Unmap().WithZone("")
		k = hopUntrusted
		if s.t.trusted(a) {
			k = hopTrusted
		}
	}
	if s.n == 0 {
		s.first = a
	}
	s.n++
	if k != hopTrusted {
		s.last, s.lastOK, s.lastFor = k, true, a
	}
}

// endUser returns the end user's address of a request from peer whose
// forwarded header has the values lines (one per header line, in order).
// The walk starts at peer: an untrusted peer is the end user itself.
// Through trusted hops it takes the first untrusted address from the
// right. A walk that meets an entry that does not parse, or an entry that
// names no address ("unknown", an obfuscated identifier), ignores the
// header: the answer is then peer, as without one. When every hop is
// trusted, the leftmost is the answer (as nginx does). The result is
// unmapped and without a zone; it is invalid only when peer is.
func (t *trust) endUser(peer netip.Addr, lines []string) netip.Addr {
	peer = peer.Unmap().WithZone("")
	if !peer.IsValid() || !t.trusted(peer) || len(lines) == 0 {
		return peer
	}
	s := hopScan{t: t}
	for _, line := range lines {
		if t.forwarded {
			scanForwarded(&s, line)
		} else {
			scanAddressList(&s, line)
		}
	}
	switch {
	case s.lastOK && s.last == hopUntrusted:
		return s.lastFor
	case s.lastOK:
		return peer // the walk met an entry it cannot judge
	case s.n > 0:
		return s.first
	}
	return peer
}

// scanAddressList reads one line of X-Forwarded-For (or any header that is
// a comma-separated list of addresses, as X-Real-IP is a list of one):
// each element an IPv4 or IPv6 address, optionally bracketed and with a
// port, or "unknown". Empty elements are skipped (RFC 9110 5.6.1).
func scanAddressList(s *hopScan, line string) {
	for line != "" {
		elem, rest, _ := strings.Cut(line, ",")
		line = rest
		elem = strings.Trim(elem, " \t")
		if elem == "" {
			continue
		}
		k, a := parseNode(elem)
		s.add(k, a)
	}
}

// scanForwarded reads one line of an RFC 7239 Forwarded header: elements
// separated by commas, each of parameters name=value separated by
// semicolons, a value a token or a quoted string. An element's node is its
// for= parameter. An element that does not parse is malformed and ends
// the line (its delimiters can no longer be trusted).
func scanForwarded(s *hopScan, line string) {
	i := 0
	skipOWS := func() {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
	}
	for {
		// One element.
		skipOWS()
		if i == len(line) {
			return
		}
		if line[i] == ',' { // an empty element
			i++
			continue
		}
		var node string
		haveFor, bad := false, false
		for !bad {
			skipOWS()
			if i == len(line) || line[i] == ',' {
				break
			}
			if line[i] == ';' { // an empty pair (RFC 7239 4: forwarded-pair is optional)
				i++
				continue
			}
			start := i
			for i < len(line) && tokenChar(line[i]) {
				i++
			}
			name := line[start:i]
			if name == "" || i == len(line) || line[i] != '=' {
				bad = true
				break
			}
			i++
			var value string
			var ok bool
			if value, i, ok = forwardedValue(line, i); !ok {
				bad = true
				break
			}
			if strings.EqualFold(name, "for") {
				if haveFor { // RFC 7239 4: a parameter at most once per element
					bad = true
					break
				}
				node, haveFor = value, true
			}
			skipOWS()
			if i < len(line) && line[i] == ';' {
				i++
				continue
			}
			if i < len(line) && line[i] != ',' {
				bad = true
			}
			break
		}
		switch {
		case bad:
			s.add(hopMalformed, netip.Addr{})
			return
		case !haveFor:
			s.add(hopUnknown, netip.Addr{})
		default:
			k, a := parseNode(node)
			s.add(k, a)
		}
		if i == len(line) {
			return
		}
		i++ // the comma
	}
}

// forwardedValue reads a parameter value at line[i:]: a quoted string
// (returned without its quotes; one holding a quoted pair is returned as
// "\\", which no node parses), or a token. An unquoted value may also hold
// ':', '[' and ']' (an IPv6 node some proxies send unquoted, against the
// grammar but unambiguous). It returns the index after the value.
func forwardedValue(line string, i int) (string, int, bool) {
	if i < len(line) && line[i] == '"' {
		start, escaped := i+1, false
		for i++; i < len(line); i++ {
			switch line[i] {
			case '\\':
				escaped = true
				i++
			case '"':
				if escaped {
					return "\\", i + 1, true
				}
				return line[start:i], i + 1, true
			}
		}
		return "", i, false // an unterminated quoted string
	}
	start := i
	for i < len(line) && (tokenChar(line[i]) || line[i] == ':' || line[i] == '[' || line[i] == ']') {
		i++
	}
	return line[start:i], i, i > start
}

// parseNode reads a node of RFC 7239 6 (the same forms serve
// X-Forwarded-For): an IPv4 address, a bracketed IPv6 address, either with
// an optional port; a bare IPv6 address; "unknown" or an obfuscated
// identifier ("_" and ALPHA, DIGIT, ".", "_", "-"), which name no address.
func parseNode(s string) (hopKind, netip.Addr) {
	if strings.EqualFold(s, "unknown") {
		return hopUnknown, netip.Addr{}
	}
	if len(s) > 1 && s[0] == '_' {
		if !isObfuscated(s[1:]) {
			return hopMalformed, netip.Addr{}
		}
		return hopUnknown, netip.Addr{}
	}
	host, port := s, ""
	if rest, ok := strings.CutPrefix(s, "["); ok {
		var found bool
		if host, port, found = strings.Cut(rest, "]"); !found {
			return hopMalformed, netip.Addr{}
		}
		if port != "" {
			var ok bool
			if port, ok = strings.CutPrefix(port, ":"); !ok {
				return hopMalformed, netip.Addr{}
			}
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || !validPort(port, true) {
			return hopMalformed, netip.Addr{}
		}
		return hopAddr, a
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return hopAddr, a // IPv4, or IPv6 without brackets and so without a port
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return hopMalformed, netip.Addr{}
	}
	host, port = s[:i], s[i+1:]
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() && validPort(port, false) {
		return hopAddr, a
	}
	return hopMalformed, netip.Addr{}
}

// validPort reports whether p is a node port: 1 to 5 digits, or an
// obfuscated port. An empty p is valid when optional.
func validPort(p string, optional bool) bool {
	if p == "" {
		return optional
	}
	if p[0] == '_' {
		return isObfuscated(p[1:])
	}
	if len(p) > 5 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

// isObfuscated reports whether s (after the "_") is the rest of an
// obfuscated node or port of RFC 7239 6.3.
func isObfuscated(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
