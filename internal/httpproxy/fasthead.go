package httpproxy

import (
	"bytes"
	"strings"
)

// Kinds of header fields the fast path treats specially.
const (
	fOther       uint8 = iota
	fHop               // hop-by-hop: never forwarded
	fHost              // rebuilt
	fLength            // rebuilt from the framing
	fTE                // Transfer-Encoding: rebuilt from the framing
	fConnection        // hop-by-hop, and names more of them
	fXFF               // X-Forwarded-For: extended
	fForwarded         // Forwarded, X-Forwarded-Host/-Proto: rebuilt
	fRequestID         // X-Request-Id
	fTraceparent       // traceparent
	fExpect            // Expect: answered here
	fTrailers          // TE: only "trailers" is forwarded
	fUpgrade           // Upgrade: the fast path hands the connection to net/http
)

// fieldKind classifies a header name, ASCII case-insensitively.
func fieldKind(name string) uint8 {
	switch len(name) {
	case 2:
		if strings.EqualFold(name, "te") {
			return fTrailers
		}
	case 4:
		if strings.EqualFold(name, "host") {
			return fHost
		}
	case 6:
		if strings.EqualFold(name, "expect") {
			return fExpect
		}
	case 7:
		if strings.EqualFold(name, "upgrade") {
			return fUpgrade
		}
		if strings.EqualFold(name, "trailer") {
			return fHop
		}
	case 9:
		if strings.EqualFold(name, "forwarded") {
			return fForwarded
		}
	case 10:
		if strings.EqualFold(name, "connection") {
			return fConnection
		}
		if strings.EqualFold(name, "keep-alive") {
			return fHop
		}
	case 11:
		if strings.EqualFold(name, "traceparent") {
			return fTraceparent
		}
	case 12:
		if strings.EqualFold(name, "x-request-id") {
			return fRequestID
		}
	case 13:
		if strings.EqualFold(name, "http2-settings") {
			return fUpgrade
		}
	case 14:
		if strings.EqualFold(name, "content-length") {
			return fLength
		}
	case 15:
		if strings.EqualFold(name, "x-forwarded-for") {
			return fXFF
		}
	case 16:
		if strings.EqualFold(name, "proxy-connection") {
			return fHop
		}
		if strings.EqualFold(name, "x-forwarded-host") {
			return fForwarded
		}
	case 17:
		if strings.EqualFold(name, "transfer-encoding") {
			return fTE
		}
		if strings.EqualFold(name, "x-forwarded-proto") {
			return fForwarded
		}
	case 18:
		if strings.EqualFold(name, "proxy-authenticate") {
			return fHop
		}
	case 19:
		if strings.EqualFold(name, "proxy-authorization") {
			return fHop
		}
	}
	return fOther
}

type field struct {
	name, value string
	kind        uint8
}

// reqHead is a request head parsed in place: every string is a substring
// of raw, the head's one copy.
type reqHead struct {
	raw     string
	method  string
	target  string // path and query, as sent
	path    string
	http10  bool
	host    string
	fields  []field
	tokens  []string // Connection header tokens: more hop-by-hop names
	length  int64    // -1: no Content-Length
	chunked bool
	close   bool // the client will not send another request
	expect  bool // Expect: 100-continue
}

// verdict is what the fast path does with a request head.
type verdict int

const (
	serveFast verdict = iota
	handOff           // valid, but net/http's to serve (upgrades, HTTP/2, odd targets)
	reject            // malformed: 400 and close
)

// Get returns the first value of a header, as http.Header.Get.
func (h *reqHead) Get(name string) string {
	for i := range h.fields {
		if strings.EqualFold(h.fields[i].name, name) {
			return h.fields[i].value
		}
	}
	return ""
}

// listed reports whether the Connection header named a header.
func (h *reqHead) listed(name string) bool {
	for _, t := range h.tokens {
		if strings.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// parse reads raw (a head up to and including the CRLF ending its last
// line, without the blank line). The checks that decide how the body is
// framed are strict (a request smuggled past them would be read
// differently by the upstream); anything valid but unusual is left to
// net/http.
func (h *reqHead) parse(raw string) (verdict, string) {
	*h = reqHead{raw: raw, fields: h.fields[:0], tokens: h.tokens[:0], length: -1}
	line, rest, _ := strings.Cut(raw, "\r\n")
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || !isToken(method) {
		return handOff, ""
	}
	switch proto {
	case "HTTP/1.1":
	case "HTTP/1.0":
		h.http10 = true
	default:
		return handOff, ""
	}
	h.method, h.target = method, target
	h.path, _, _ = strings.Cut(target, "?")
	if !plainTarget(target, len(h.path)) {
		return handOff, ""
	}
	hosts, keepAlive, teOther := 0, false, false
	for rest != "" {
		line, rest, _ = strings.Cut(rest, "\r\n")
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return reject, "malformed header line"
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		if !validValue(value) {
			return reject, "invalid header value"
		}
		k := fieldKind(name)
		switch k {
		case fHost:
			hosts++
			h.host = value
		case fLength:
			n, ok := parseLength(value)
			if !ok || h.length >= 0 && n != h.length {
				return reject, "invalid Content-Length"
			}
			h.length = n
		case fTE:
			switch {
			case h.chunked || teOther:
				return reject, "repeated Transfer-Encoding"
			case strings.EqualFold(value, "chunked"):
				h.chunked = true
			default:
				teOther = true // other codings: net/http answers
			}
		case fConnection:
			for t := range strings.SplitSeq(value, ",") {
				t = trimOWS(t)
				switch {
				case strings.EqualFold(t, "close"):
					h.close = true
				case strings.EqualFold(t, "keep-alive"):
					keepAlive = true
				case t != "":
					h.tokens = append(h.tokens, t)
				}
			}
		case fExpect:
			if !strings.EqualFold(value, "100-continue") {
				return handOff, ""
			}
			h.expect = !h.http10
		case fUpgrade:
			return handOff, ""
		}
		h.fields = append(h.fields, field{name: name, value: value, kind: k})
	}
	switch {
	case (h.chunked || teOther) && h.length >= 0:
		return reject, "both Content-Length and Transfer-Encoding"
	case h.http10 && (h.chunked || teOther):
		return reject, "Transfer-Encoding in HTTP/1.0" // RFC 9112 6.1: faulty framing
	case teOther:
		return handOff, ""
	case hosts > 1:
		return reject, "more than one Host"
	case hosts == 0 && !h.http10:
		return reject, "missing Host"
	case !validHost(h.host):
		return reject, "invalid Host"
	}
	if h.http10 && !keepAlive {
		h.close = true
	}
	return serveFast, ""
}

// plainTarget reports whether target is an origin-form path whose bytes are
// the path itself (no percent-encoding, nothing net/http would rewrite), so
// that routes match the raw bytes as they would match net/http's URL.Path.
func plainTarget(target string, pathLen int) bool {
	if len(target) == 0 || target[0] != '/' || len(target) > 1 && target[1] == '/' {
		return false
	}
	for i := 0; i < len(target); i++ {
		c := target[i]
		if i >= pathLen {
			if c <= ' ' || c >= 0x7f || c == '#' {
				return false
			}
			continue
		}
		if !pathChar(c) {
			return false
		}
	}
	return !strings.Contains(target[:pathLen], "/.")
}

func pathChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			return false
		}
	}
	return true
}

// validValue rejects control characters other than tab (a bare CR or LF
// among them).
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func validHost(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == '\\' || c == '?' || c == '#' || c == '@' {
			return false
		}
	}
	return true
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// parseLength parses a Content-Length: digits only, no sign, no list.
func parseLength[T string | []byte](s T) (int64, bool) {
	if len(s) == 0 || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// headEnd returns the length of the head in b up to and including the CRLF
// of its last line (the blank line follows), or -1 while it is incomplete;
// bare when the head ends in bare LFs, which only net/http accepts.
func headEnd(b []byte) (n int, bare bool) {
	// One pass over the line ends: this runs per request and per response.
	for i := 0; ; i++ {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1, false
		}
		i += j
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i, true
		case i > 0 && b[i-1] == '\r' && i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 1, false
		}
	}
}

// respHead is an upstream response head parsed in place in the upstream
// connection's read buffer (valid until the buffer moves on).
type respHead struct {
	head    []byte
	status  int
	reason  []byte
	lines   [][2]int // header lines to forward (offsets in head, CRLF included)
	tokens  [][]byte // Connection tokens
	length  int64    // -1: none
	chunked bool
	close   bool // the upstream closes after this response
}

// parseResponse parses a response head (up to and including the CRLF of
// its last header line).
func (r *respHead) parse(head []byte) bool {
	*r = respHead{head: head, lines: r.lines[:0], tokens: r.tokens[:0], length: -1}
	eol := bytes.Index(head, []byte("\r\n"))
	line := head[:eol]
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' || len(line) > 12 && line[12] != ' ' {
		return false
	}
	if line[7] == '0' {
		r.close = true
	} else if line[7] != '1' {
		return false
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return false
		}
		r.status = r.status*10 + int(c-'0')
	}
	if len(line) > 13 {
		r.reason = line[13:]
	}
	keepAlive := false
	for off := eol + 2; off < len(head); {
		e := bytes.Index(head[off:], []byte("\r\n"))
		if e < 0 {
			return false
		}
		line := head[off : off+e]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(string(line[:colon])) { // no allocation: converted for the call only
			return false
		}
		name, value := string(line[:colon]), bytes.TrimSpace(line[colon+1:])
		keep := true
		switch fieldKind(name) {
		case fLength:
			n, ok := parseLength(value)
			if !ok || r.length >= 0 && n != r.length {
				return false
			}
			r.length = n
		case fTE:
			if !bytes.EqualFold(value, []byte("chunked")) || r.chunked {
				return false
			}
			r.chunked, keep = true, false
		case fConnection:
			keep = false
			for t := range bytes.SplitSeq(value, []byte(",")) {
				t = bytes.TrimSpace(t)
				switch {
				case bytes.EqualFold(t, []byte("close")):
					r.close = true
				case bytes.EqualFold(t, []byte("keep-alive")):
					keepAlive = true
				case len(t) > 0:
					r.tokens = append(r.tokens, t)
				}
			}
		case fHop, fTrailers, fUpgrade:
			keep = false
		}
		if keep {
			r.lines = append(r.lines, [2]int{off, off + e + 2})
		}
		off += e + 2
	}
	if r.chunked && r.length >= 0 {
		return false
	}
	if r.close && line[7] == '0' && keepAlive {
		r.close = false
	}
	return true
}

// listed reports whether the response's Connection header named line's
// header.
func (r *respHead) listed(line []byte) bool {
	if len(r.tokens) == 0 {
		return false
	}
	name, _, _ := bytes.Cut(line, []byte(":"))
	for _, t := range r.tokens {
		if bytes.EqualFold(t, name) {
			return true
		}
	}
	return false
}
