package httpproxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// clientPreface is the HTTP/2 connection preface (RFC 9113 3.4).
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// HTTP/2 settings of the net/http server that the frame filter mirrors.
const (
	// h2MaxFrameSize is the SETTINGS_MAX_FRAME_SIZE the server advertises:
	// the protocol's initial value, so that a peer that sends a larger
	// frame before it has read the server's SETTINGS gets FRAME_SIZE_ERROR
	// (RFC 9113 4.2) rather than an answer.
	h2MaxFrameSize = 16384
	// h2HeaderTableSize is the server's SETTINGS_HEADER_TABLE_SIZE
	// (net/http's default), the size the shadow HPACK decoder keeps.
	h2HeaderTableSize = 4096
)

// greeting is how a connection handed to net/http begins.
type greeting int

const (
	greetHTTP1 greeting = iota // an HTTP/1.x request line, or too long to tell: net/http answers
	greetHTTP2                 // the HTTP/2 connection preface
	greetOther                 // neither: closed without an answer
)

// readGreeting waits until br holds enough of the connection's first bytes
// to tell its protocol (see classifyGreeting).
func readGreeting(br *bufio.Reader) (greeting, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if g, ok := classifyGreeting(b); ok {
			return g, nil
		}
		if br.Buffered() >= br.Size() {
			return greetHTTP1, nil
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return greetOther, err
		}
	}
}

// classifyGreeting tells the protocol of a connection that begins with b;
// ok is false while more bytes are needed. A first line whose last word is
// not an HTTP version is neither protocol (RFC 9113 3.4: an invalid
// preface ends the connection; an HTTP/1.1 answer to it would be read as a
// frame).
func classifyGreeting(b []byte) (g greeting, ok bool) {
	n := min(len(b), len(clientPreface))
	if string(b[:n]) == clientPreface[:n] {
		return greetHTTP2, n == len(clientPreface)
	}
	line, _, found := bytes.Cut(b, []byte("\n"))
	if !found {
		return 0, false
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return greetHTTP1, true // net/http's to judge
	}
	if !httpVersion(line[bytes.LastIndexByte(line, ' ')+1:]) {
		return greetOther, true
	}
	return greetHTTP1, true
}

// notHTTP reports whether a head b is neither HTTP/1 nor the HTTP/2
// preface, as classifyGreeting tells: the fast paths close its connection
// without an answer, as handOff does, rather than answer 400 (an HTTP/2
// client that sent a bad preface would read it as a frame).
func notHTTP(b []byte) bool {
	g, ok := classifyGreeting(b)
	return ok && g == greetOther
}

// httpVersion reports whether v is HTTP-version's shape, HTTP/d.d.
func httpVersion(v []byte) bool {
	return len(v) == 8 && string(v[:5]) == "HTTP/" && isDigit(v[5]) && v[6] == '.' && isDigit(v[7])
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// h2Secure reports whether a TLS connection may carry HTTP/2 (RFC 9113
// 9.2): TLS 1.3, or TLS 1.2 with an ephemeral key exchange and an AEAD
// cipher (every other suite Go offers is on RFC 7540's list of prohibited
// ones). net/http's server checks this only on a *tls.Conn, which it does
// not get (see Server.handOff).
func h2Secure(st *tls.ConnectionState) bool {
	switch {
	case st.Version >= tls.VersionTLS13:
		return true
	case st.Version < tls.VersionTLS12:
		return false
	}
	switch st.CipherSuite {
	case tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		return true
	}
	return false
}

// HTTP/2 frame types and flags the filter reads (RFC 9113 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	frameContinuation = 0x9

	flagAck        = 0x1
	flagEndStream  = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// rejectField is a header block fragment that net/http's server rejects
// with a stream error of type PROTOCOL_ERROR: a literal field, not
// indexed, named "X" (upper case is malformed in HTTP/2, RFC 9113 8.2.1),
// with an empty value. It leaves the HPACK dynamic table as it was.
var rejectField = []byte{0x00, 0x01, 'X', 0x00}

// h2Conn is a client's HTTP/2 connection, from its preface on, as
// net/http's HTTP/2 server reads it. Frames pass through unchanged except:
//
//   - a SETTINGS frame that repeats a parameter carries only the last value
//     of each (RFC 9113 6.5.3 has them processed in order, so the last one
//     wins; net/http's server would close the connection);
//   - a header block with a connection-specific field or a TE other than
//     "trailers" (RFC 9113 8.2.2: malformed) is followed by a CONTINUATION
//     frame holding rejectField, so that the server resets the stream with
//     PROTOCOL_ERROR; it would answer 400 instead;
//   - a request whose DATA ends the stream short of its content-length
//     (RFC 9113 8.1.1: malformed) has END_STREAM taken off its last frame
//     and an empty HEADERS frame without END_STREAM appended, trailers that
//     do not end the stream, which the server resets with PROTOCOL_ERROR;
//     it would hand the handler a body that fails part way. (The server
//     resets a stream that sends more than its content-length itself.)
//
// The header blocks are decoded by a shadow HPACK decoder kept in step
// with the server's. When a frame is one the server will refuse (too
// large, out of order, undecodable), the filter stops looking and passes
// everything through: the server closes the connection.
type h2Conn struct {
	net.Conn
	br      *bufio.Reader
	pass    int    // bytes of the current frame still to pass through
	out     []byte // filtered bytes not yet read
	buf     []byte
	err     error // sticky: the filter's state is lost after a read error
	inspect bool
	dec     *hpack.Decoder
	block   blockCheck
	stream  uint32           // the stream of the header block being read; 0: none
	endStr  bool             // that block's HEADERS frame ends its stream
	bodies  map[uint32]int64 // streams with a content-length: the bytes still due
	hdr     [9]byte
	after   []byte // bytes to give once the frame passing through has passed
}

// maxBodies bounds the streams whose content-length the filter follows
// (net/http's server allows 250 at once); others go unchecked.
const maxBodies = 1000

// newH2Conn filters c, whose bytes (from the preface on) br reads.
func newH2Conn(c net.Conn, br *bufio.Reader) *h2Conn {
	h := &h2Conn{Conn: c, br: br, pass: len(clientPreface), inspect: true}
	h.dec = hpack.NewDecoder(h2HeaderTableSize, h.block.field)
	return h
}

func (h *h2Conn) Read(p []byte) (int, error) {
	for len(h.out) == 0 && h.pass == 0 && h.inspect {
		if h.after != nil {
			h.out, h.after = h.after, nil
			break
		}
		if h.err != nil {
			return 0, h.err
		}
		h.err = h.next()
	}
	if len(h.out) > 0 {
		n := copy(p, h.out)
		h.out = h.out[n:]
		return n, nil
	}
	if h.inspect && len(p) > h.pass {
		p = p[:h.pass]
	}
	n, err := h.br.Read(p)
	h.pass -= min(n, h.pass)
	return n, err
}

// next reads the next frame's header and either lets the frame pass
// through or reads and filters it into out.
func (h *h2Conn) next() error {
	hdr, err := h.br.Peek(9)
	if err != nil {
		if h.br.Buffered() > 0 {
			h.inspect = false // a partial frame, then an error: the server's to see
			return nil
		}
		return err
	}
	length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	typ, flags := hdr[3], hdr[4]
	stream := binary.BigEndian.Uint32(hdr[5:9]) & (1<<31 - 1)
	switch {
	case h.stream != 0 && (typ != frameContinuation || stream != h.stream):
		h.inspect = false // the server's connection error
	case length > h2MaxFrameSize:
		h.inspect = false // FRAME_SIZE_ERROR
	case typ == frameData && h.bodies[stream] > 0:
		return h.data(length, flags, stream)
	case typ == frameRSTStream:
		delete(h.bodies, stream)
	case typ == frameSettings && flags&flagAck == 0 || typ == frameHeaders || typ == frameContinuation:
		h.buf = append(h.buf[:0], make([]byte, 9+length)...)
		if n, err := io.ReadFull(h.br, h.buf); err != nil {
			h.out, h.inspect = h.buf[:n], false
			return nil
		}
		h.out = h.filter(h.buf, typ, flags, stream)
		return nil
	}
	h.pass = 9 + length
	return nil
}

// data lets a DATA frame of a stream with a content-length pass through,
// counting its bytes; when it ends the stream short of that length, it
// does not, and trailers that do not end it follow.
func (h *h2Conn) data(length int, flags byte, stream uint32) error {
	n := length
	if flags&flagPadded != 0 {
		b, err := h.br.Peek(10)
		if err != nil || length < 1 || int(b[9]) >= length {
			h.inspect = false // the server's error
			h.pass = 9 + length
			return nil
		}
		n -= 1 + int(b[9])
	}
	due := h.bodies[stream] - int64(n)
	h.pass = 9 + length
	if due <= 0 {
		delete(h.bodies, stream) // in full, or the server's error
		return nil
	}
	if flags&flagEndStream == 0 {
		h.bodies[stream] = due
		return nil
	}
	delete(h.bodies, stream)
	h.br.Read(h.hdr[:]) // Peeked: no error
	h.hdr[4] &^= flagEndStream
	h.out, h.pass = h.hdr[:], length
	h.after = []byte{0, 0, 0, frameHeaders, flagEndHeaders, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h.after[5:], stream)
	return nil
}

// filter returns the bytes that stand for the frame f (header included).
func (h *h2Conn) filter(f []byte, typ, flags byte, stream uint32) []byte {
	payload := f[9:]
	if typ == frameSettings {
		if len(payload)%6 != 0 || len(payload) > 6*100 {
			return f // the server's error
		}
		payload = lastSettings(payload)
		putLength(f, len(payload))
		return f[:9+len(payload)]
	}
	if typ == frameHeaders {
		h.block = blockCheck{length: -1}
		h.stream, h.endStr = stream, flags&flagEndStream != 0
		if due, ok := h.bodies[stream]; ok && h.endStr { // trailers
			delete(h.bodies, stream)
			if due > 0 {
				f[4] &^= flagEndStream
			}
		}
		if flags&flagPadded != 0 {
			if len(payload) < 1 || int(payload[0]) >= len(payload) {
				h.inspect = false
				return f
			}
			payload = payload[1 : len(payload)-int(payload[0])]
		}
		if flags&flagPriority != 0 {
			if len(payload) < 5 {
				h.inspect = false
				return f
			}
			payload = payload[5:]
		}
	} else if h.stream == 0 {
		h.inspect = false // CONTINUATION out of place: the server's error
		return f
	}
	if _, err := h.dec.Write(payload); err != nil {
		h.inspect = false // COMPRESSION_ERROR
		return f
	}
	if flags&flagEndHeaders == 0 {
		return f
	}
	h.stream = 0
	if err := h.dec.Close(); err != nil {
		h.inspect = false
		return f
	}
	if h.block.invalid {
		return f // the server rejects the block itself
	}
	if !h.block.forbidden {
		if _, seen := h.bodies[stream]; h.block.length > 0 && !h.endStr && !seen && len(h.bodies) < maxBodies {
			if h.bodies == nil {
				h.bodies = map[uint32]int64{}
			}
			h.bodies[stream] = h.block.length
		}
		return f
	}
	f[4] &^= flagEndHeaders
	var cont [9]byte
	putLength(cont[:], len(rejectField))
	cont[3], cont[4] = frameContinuation, flagEndHeaders
	binary.BigEndian.PutUint32(cont[5:], stream)
	f = append(f, cont[:]...)
	return append(f, rejectField...)
}

// putLength writes a frame's payload length into its header f.
func putLength(f []byte, n int) {
	f[0], f[1], f[2] = byte(n>>16), byte(n>>8), byte(n)
}

// lastSettings keeps, in place, the last value of each parameter of a
// SETTINGS payload, in the order of those last values.
func lastSettings(p []byte) []byte {
	out := p[:0]
	for i := 0; i < len(p); i += 6 {
		later := false
		for j := i + 6; j < len(p) && !later; j += 6 {
			later = p[j] == p[i] && p[j+1] == p[i+1]
		}
		if !later {
			out = append(out, p[i:i+6]...)
		}
	}
	return out
}

// blockCheck judges the fields of one request header block as the shadow
// decoder emits them.
type blockCheck struct {
	length    int64 // content-length; -1: none, or not one valid value
	regular   bool  // a regular field was seen
	invalid   bool  // a field net/http's server rejects itself
	forbidden bool  // a field HTTP/2 forbids and the server would accept
}

// connectionFields are the connection-specific fields HTTP/2 forbids
// (RFC 9113 8.2.2), as they appear on the wire (lower case).
var connectionFields = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true,
}

func (b *blockCheck) field(f hpack.HeaderField) {
	if strings.HasPrefix(f.Name, ":") {
		b.invalid = b.invalid || b.regular
		return
	}
	b.regular = true
	switch {
	case !httpguts.ValidHeaderFieldValue(f.Value) || !wireFieldName(f.Name):
		b.invalid = true
	case connectionFields[f.Name] || f.Name == "te" && f.Value != "trailers":
		b.forbidden = true
	case f.Name == "content-length":
		n, ok := parseLength(f.Value)
		if !ok || b.length != -1 {
			n = -2 // left to the server
		}
		b.length = n
	}
}

// wireFieldName reports whether name is a valid HTTP/2 field name: a token
// without upper case letters (RFC 9113 8.2.1).
func wireFieldName(name string) bool {
	for i := 0; i < len(name); i++ {
		if c := name[i]; !httpguts.IsTokenRune(rune(c)) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return name != ""
}
