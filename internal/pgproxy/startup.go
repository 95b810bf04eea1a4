package pgproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits on what a client may send before it is logged in, PostgreSQL's
// own: a startup packet (MAX_STARTUP_PACKET_LENGTH), a password message
// (PG_MAX_AUTH_TOKEN_LENGTH) and a SASL message (PG_MAX_SASL_MESSAGE_LENGTH),
// each counting its length word. Nothing a client sends before
// AuthenticationOk makes attache hold more than these.
const (
	maxStartupPacket = 10000
	maxPasswordMsg   = 65535
	maxSASLMsg       = 1024
)

// Startup packet codes (a protocol version, major<<16 | minor, or a
// request).
const (
	codeCancel  = 80877102
	codeSSL     = 80877103
	codeGSSEnc  = 80877104
	protocol30  = 3 << 16
	pqOptPrefix = "_pq_."
)

// startupMsg is one packet of the startup phase: a request (SSL, GSS
// encryption, cancel), or a StartupMessage of protocol 3.x.
type startupMsg struct {
	code   uint32
	params map[string]string // a StartupMessage's, in order of no importance
	// options are the protocol options (_pq_.*) the client asked for,
	// none of which attache knows: it answers NegotiateProtocolVersion.
	options []string
	// cancel request: the key it names
	pid    uint32
	secret []byte
}

// startup reports whether the packet is a StartupMessage.
func (sp *startupMsg) startup() bool { return sp.code>>16 == 3 }

// minor is a StartupMessage's minor protocol version.
func (sp *startupMsg) minor() uint32 { return sp.code & 0xffff }

// errUnsupportedProtocol is a StartupMessage of a major version other
// than 3 (PostgreSQL answers 0A000 feature_not_supported).
var errUnsupportedProtocol = errors.New("unsupported frontend protocol")

// readStartup reads one startup-phase packet from r, exactly its bytes
// (nothing is read ahead: what follows stays in r), at most
// maxStartupPacket of them.
func readStartup(r io.Reader) (*startupMsg, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(head[:]))
	if n < 8 || n > maxStartupPacket {
		return nil, fmt.Errorf("invalid length of startup packet: %d", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return parseStartup(body)
}

// parseStartup parses a startup packet's body (after its length word) as
// PostgreSQL's ProcessStartupPacket does.
func parseStartup(body []byte) (*startupMsg, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("invalid length of startup packet: %d", len(body)+4)
	}
	sp := &startupMsg{code: binary.BigEndian.Uint32(body)}
	rest := body[4:]
	switch {
	case sp.code == codeSSL || sp.code == codeGSSEnc:
		return sp, nil
	case sp.code == codeCancel:
		// 4 bytes of key in protocol 3.0, up to 256 in 3.2.
		if len(rest) < 8 || len(rest) > 4+256 {
			return nil, fmt.Errorf("invalid length of cancel request: %d", len(body)+4)
		}
		sp.pid, sp.secret = binary.BigEndian.Uint32(rest), rest[4:]
		return sp, nil
	case sp.code>>16 != 3:
		return nil, fmt.Errorf("%w %d.%d: server supports 3.0 to 3.0", errUnsupportedProtocol, sp.code>>16, sp.code&0xffff)
	}
	sp.params = map[string]string{}
	for len(rest) > 0 && rest[0] != 0 {
		name, after, ok := bytes.Cut(rest, []byte{0})
		if !ok {
			break
		}
		value, after2, ok := bytes.Cut(after, []byte{0})
		if !ok {
			return nil, errors.New("invalid startup packet layout: expected terminator as last byte")
		}
		if k := string(name); strings.HasPrefix(k, pqOptPrefix) {
			sp.options = append(sp.options, k)
		} else {
			sp.params[k] = string(value)
		}
		rest = after2
	}
	if len(rest) != 1 || rest[0] != 0 {
		return nil, errors.New("invalid startup packet layout: expected terminator as last byte")
	}
	return sp, nil
}
