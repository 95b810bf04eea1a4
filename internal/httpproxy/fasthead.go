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

// maxFields bounds the fields of a request head (HAProxy allows 101 by
// default): a head of 1 MiB, net/http's limit, could otherwise hold a
// quarter of a million, each an entry of h.fields.
const maxFields = 500

// unsupportedVersion is the reason for a request of an HTTP version other
// than 1.x: answered 505, as net/http does, where other rejects get 400.
const unsupportedVersion = "unsupported protocol version"

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
// line, without the blank line). Every check runs before the verdict, a
// hand-off included: the request line, field names (tokens, so no
// obs-fold) and values (RFC 9110 5.5: no control character but tab), and
// the framing (RFC 9112 6.1, 6.3: one Content-Length, or one
// Transfer-Encoding that is exactly chunked, never both), so that nothing
// the fast path refuses reaches net/http by another door. Anything valid
// but unusual (Upgrade, Expect other than 100-continue, odd targets,
// HTTP/1.2 and later minors, the HTTP/2 preface) is left to net/http.
func (h *reqHead) parse(raw string) (verdict, string) {
	*h = reqHead{raw: raw, fields: h.fields[:0], tokens: h.tokens[:0], length: -1}
	line, rest, _ := strings.Cut(raw, "\r\n")
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || !isToken(method) {
		return reject, "malformed request line"
	}
	odd := false // valid, for net/http
	switch {
	case proto == "HTTP/1.1":
	case proto == "HTTP/1.0":
		h.http10 = true
	case len(proto) == 8 && strings.HasPrefix(proto, "HTTP/1.") && '2' <= proto[7] && proto[7] <= '9':
		odd = true
	case method == "PRI" && target == "*" && proto == "HTTP/2.0" && rest == "":
		return handOff, "" // the HTTP/2 connection preface
	default:
		return reject, unsupportedVersion
	}
	h.method, h.target = method, target
	h.path, _, _ = strings.Cut(target, "?")
	if !plainTarget(target, len(h.path)) {
		if !validTarget(target) {
			return reject, "malformed request target"
		}
		odd = true
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
				odd = true // net/http answers 417
			}
			h.expect = !h.http10
		case fUpgrade:
			odd = true
		}
		if len(h.fields) == maxFields {
			return reject, "too many header fields"
		}
		h.fields = append(h.fields, field{name: name, value: value, kind: k})
	}
	switch {
	case (h.chunked || teOther) && h.length >= 0:
		return reject, "both Content-Length and Transfer-Encoding"
	case h.http10 && (h.chunked || teOther):
		return reject, "Transfer-Encoding in HTTP/1.0" // RFC 9112 6.1: faulty framing
	case teOther:
		return reject, "Transfer-Encoding other than chunked" // RFC 9112 6.3; net/http refuses it too
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
	if odd {
		return handOff, ""
	}
	return serveFast, ""
}

// parseBare checks a head whose lines end in bare LFs, as headEnd reports
// it (up to its last line, without that line's LF), by parse's rules; such
// a head is only ever handed off (net/http reads bare LFs), so this
// allocates, off the fast path. A bare CR left after the CRLFs are read as
// line ends is a control character in its line, refused as parse refuses
// it.
func (h *reqHead) parseBare(raw []byte) (verdict, string) {
	s := strings.ReplaceAll(strings.TrimSuffix(string(raw), "\r"), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n") + "\r\n"
	if v, why := h.parse(s); v == reject {
		return v, why
	}
	return handOff, ""
}

// validTarget reports whether a request target that is not a plain path
// has no byte net/http would refuse in it either: controls, space, DEL.
func validTarget(target string) bool {
	if target == "" {
		return false
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
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
func isToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChar(s[i]) {
			return false
		}
	}
	return true
}

// tokenChar reports whether c is an RFC 9110 tchar: ALPHA, DIGIT or one
// of !#$%&'*+-.^_`|~ (a bit each in tcharLo for 0-63, tcharHi for 64-127;
// TestTokenChar checks them against that definition).
func tokenChar(c byte) bool {
	const tcharLo, tcharHi = 0x3ff6cfa00000000, 0x57ffffffc7fffffe
	if c < 64 {
		return tcharLo>>c&1 != 0
	}
	return c < 128 && tcharHi>>(c-64)&1 != 0
}

// validValue rejects control characters other than tab (a bare CR or LF
// among them), as RFC 9110 5.5 field values and reason phrases do.
func validValue[T string | []byte](s T) bool {
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

// trimOWS trims optional whitespace (RFC 9110 5.6.3: SP and HTAB only, so
// that a trailing control is left for validValue to see).
func trimOWS[T string | []byte](s T) T {
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

// parse parses a response head (up to and including the CRLF of its last
// header line) strictly, by the rules reqHead.parse applies to requests:
// a status line of HTTP/1.x, three digits and a reason without controls;
// token names (no obs-fold); values without controls but tab; one framing.
// false: the head is not relayed (502, and the connection closes).
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
	if r.status < 100 {
		return false // RFC 9110 15: 100 to 599 (and 600-999 read as their class); 0xx is none
	}
	if len(line) > 13 {
		r.reason = line[13:]
		if !validValue(r.reason) {
			return false
		}
	}
	keepAlive := false
	for off := eol + 2; off < len(head); {
		e := bytes.Index(head[off:], []byte("\r\n"))
		if e < 0 {
			return false
		}
		line := head[off : off+e]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return false
		}
		name, value := string(line[:colon]), trimOWS(line[colon+1:])
		if !validValue(value) {
			return false // a bare CR or LF, a NUL: never relayed to the app
		}
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

// validTrailer reports whether line (a trailer line without its CRLF) is
// a field a trailer section may carry: a token name (no obs-fold), a value
// without controls, and none of the fields that frame, route or
// authenticate a message (RFC 9110 6.5.1; net/http's list of trailers it
// refuses to declare).
func validTrailer(line []byte) bool {
	colon := bytes.IndexByte(line, ':')
	return colon > 0 && validTrailerField(line[:colon], line[colon+1:])
}

// validTrailerField is validTrailer of a field read already.
func validTrailerField[T string | []byte](name, value T) bool {
	return isToken(name) && validValue(value) && !forbiddenTrailer(name)
}

// forbiddenTrailer reports whether a trailer field of that name is
// refused, ASCII case-insensitively.
func forbiddenTrailer[T string | []byte](name T) bool {
	var fs []string
	switch len(name) {
	case 2:
		fs = []string{"te"}
	case 4:
		fs = []string{"host"}
	case 5:
		fs = []string{"range", "realm"}
	case 6:
		fs = []string{"expect", "pragma"}
	case 7:
		fs = []string{"trailer", "upgrade"}
	case 10:
		fs = []string{"connection", "keep-alive"}
	case 12:
		fs = []string{"content-type", "max-forwards"}
	case 13:
		fs = []string{"authorization", "cache-control", "content-range"}
	case 14:
		fs = []string{"content-length"}
	case 16:
		fs = []string{"content-encoding", "proxy-connection", "www-authenticate"}
	case 17:
		fs = []string{"transfer-encoding"}
	case 18:
		fs = []string{"proxy-authenticate"}
	case 19:
		fs = []string{"proxy-authorization"}
	}
	for _, f := range fs {
		if asciiEqualFold(name, f) {
			return true
		}
	}
	return false
}

// asciiEqualFold is strings.EqualFold for ASCII, over bytes or a string.
func asciiEqualFold[T string | []byte](s T, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
