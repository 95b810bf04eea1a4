// Package resp reads RESP2 messages (Redis's protocol) without copying:
// commands as argument slices into the read buffer, replies as the raw
// bytes of one complete reply, ready to be forwarded as they are.
//
// Memory is bounded by what actually arrives, never by a length a peer
// declares: a "$1000000000" header allocates nothing until the bytes come,
// and every length is checked against limits first.
package resp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Limits, as Redis's own defaults.
const (
	MaxBulk     = 512 << 20 // proto-max-bulk-len
	MaxArgs     = 1 << 20   // multibulk length Redis accepts
	MaxInline   = 64 << 10  // inline command length
	MaxDepth    = 128       // nesting of array replies
	minReadSize = 4 << 10
)

// ProtocolError is a malformed message. The connection cannot be resynced
// after one: the server (or proxy) answers with the error and closes.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "Protocol error: " + e.Msg }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// Reader reads messages from an io.Reader. Slices it returns are valid
// until the next call.
type Reader struct {
	rd         io.Reader
	buf        []byte
	start, end int
	args       [][]byte
}

// NewReader returns a Reader on rd.
func NewReader(rd io.Reader) *Reader {
	return &Reader{rd: rd, buf: make([]byte, minReadSize)}
}

// Reset discards what r holds and makes it read from rd, keeping its
// buffer unless that grew large: one Reader can serve many connections in
// turn.
func (r *Reader) Reset(rd io.Reader) {
	if len(r.buf) > 64<<10 {
		r.buf = make([]byte, minReadSize)
	}
	r.rd, r.start, r.end = rd, 0, 0
	clear(r.args[:cap(r.args)])
	r.args = r.args[:0]
}

// Buffered reports whether a complete or partial message is already in the
// buffer (a pipelining client sent more): the caller can keep reading
// before flushing replies.
func (r *Reader) Buffered() int { return r.end - r.start }

// ReadCommand reads one command: a multibulk array of bulk strings, or an
// inline command. raw is the command's bytes as received.
func (r *Reader) ReadCommand() (args [][]byte, raw []byte, err error) {
	for {
		n, err := r.parseCommand(r.buf[r.start:r.end])
		if err != nil {
			return nil, nil, err
		}
		if n > 0 {
			raw = r.buf[r.start : r.start+n]
			r.start += n
			return r.args, raw, nil
		}
		if err := r.fill(); err != nil {
			return nil, nil, err
		}
	}
}

// ReadReply reads one complete reply and returns its raw bytes.
func (r *Reader) ReadReply() ([]byte, error) {
	for {
		n, err := parseReply(r.buf[r.start:r.end], 0)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			raw := r.buf[r.start : r.start+n]
			r.start += n
			return raw, nil
		}
		if err := r.fill(); err != nil {
			return nil, err
		}
	}
}

// fill reads more bytes, moving or growing the buffer as needed.
func (r *Reader) fill() error {
	if r.start > 0 && r.start == r.end {
		r.start, r.end = 0, 0
	}
	if r.end == len(r.buf) {
		if r.start > 0 {
			r.end = copy(r.buf, r.buf[r.start:r.end])
			r.start = 0
		} else {
			nb := make([]byte, 2*len(r.buf))
			copy(nb, r.buf[:r.end])
			r.buf = nb
		}
	}
	n, err := r.rd.Read(r.buf[r.end:])
	r.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	if errors.Is(err, io.EOF) && r.end > r.start {
		return io.ErrUnexpectedEOF
	}
	return err
}

// line returns the length of the line at b's start (without CRLF) and of
// the line with it; ok false when no CRLF yet.
func line(b []byte) (content, total int, ok bool) {
	i := bytes.IndexByte(b, '\n')
	switch {
	case i < 0:
		return 0, 0, false
	case i == 0 || b[i-1] != '\r':
		return -1, 0, true // LF without CR
	}
	return i - 1, i + 1, true
}

// parseInt parses a decimal int64 as strconv.ParseInt does, without
// converting b to a string.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg || b[0] == '+' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	switch {
	case !neg && n > math.MaxInt64, neg && n > math.MaxInt64+1:
		return 0, false
	case neg:
		return -int64(n), true
	}
	return int64(n), true
}

// parseCommand returns the length of the complete command at b's start,
// 0 when more bytes are needed. The arguments are left in r.args.
func (r *Reader) parseCommand(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.args = r.args[:0]
	if b[0] != '*' {
		return r.parseInline(b)
	}
	c, t, ok := line(b)
	if !ok {
		if len(b) > 32 {
			return 0, protoErr("invalid multibulk length")
		}
		return 0, nil
	}
	if c < 0 {
		return 0, protoErr("invalid multibulk length")
	}
	count, valid := parseInt(b[1:c])
	if !valid || count > MaxArgs {
		return 0, protoErr("invalid multibulk length")
	}
	pos := t
	for i := int64(0); i < count; i++ {
		if pos >= len(b) {
			return 0, nil
		}
		if b[pos] != '$' {
			return 0, protoErr("expected '$', got '%c'", b[pos])
		}
		c, t, ok := line(b[pos:])
		if !ok {
			if len(b)-pos > 32 {
				return 0, protoErr("invalid bulk length")
			}
			return 0, nil
		}
		if c < 0 {
			return 0, protoErr("invalid bulk length")
		}
		size, valid := parseInt(b[pos+1 : pos+c])
		if !valid || size < 0 || size > MaxBulk {
			return 0, protoErr("invalid bulk length")
		}
		data := pos + t
		if int64(len(b)-data) < size+2 {
			return 0, nil
		}
		end := data + int(size)
		if b[end] != '\r' || b[end+1] != '\n' {
			return 0, protoErr("bulk string not terminated by CRLF")
		}
		r.args = append(r.args, b[data:end])
		pos = end + 2
	}
	return pos, nil
}

// parseInline parses "GET key\r\n" (or LF-terminated), as redis-cli and
// telnet users send.
func (r *Reader) parseInline(b []byte) (int, error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if len(b) > MaxInline {
			return 0, protoErr("too big inline request")
		}
		return 0, nil
	}
	text := b[:i]
	if len(text) > 0 && text[len(text)-1] == '\r' {
		text = text[:len(text)-1]
	}
	for _, f := range bytes.Fields(text) {
		r.args = append(r.args, f)
	}
	return i + 1, nil
}

// parseReply returns the length of the complete reply at b's start, 0
// when more bytes are needed.
func parseReply(b []byte, depth int) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c, t, ok := line(b)
	if !ok {
		switch {
		case (b[0] == '$' || b[0] == '*' || b[0] == ':') && len(b) > 32:
			return 0, protoErr("invalid length line")
		case len(b) > MaxInline:
			return 0, protoErr("status line too long")
		}
		return 0, nil
	}
	if c < 0 {
		return 0, protoErr("line not terminated by CRLF")
	}
	switch b[0] {
	case '+', '-':
		return t, nil
	case ':':
		if _, valid := parseInt(b[1:c]); !valid {
			return 0, protoErr("invalid integer")
		}
		return t, nil
	case '$':
		size, valid := parseInt(b[1:c])
		if !valid || size < -1 || size > MaxBulk {
			return 0, protoErr("invalid bulk length")
		}
		if size == -1 {
			return t, nil
		}
		if int64(len(b)-t) < size+2 {
			return 0, nil
		}
		end := t + int(size)
		if b[end] != '\r' || b[end+1] != '\n' {
			return 0, protoErr("bulk string not terminated by CRLF")
		}
		return end + 2, nil
	case '*':
		count, valid := parseInt(b[1:c])
		if !valid || count < -1 || count > MaxArgs {
			return 0, protoErr("invalid multibulk length")
		}
		if depth >= MaxDepth {
			return 0, protoErr("reply nested too deeply")
		}
		pos := t
		for i := int64(0); i < count; i++ {
			n, err := parseReply(b[pos:], depth+1)
			if err != nil || n == 0 {
				return 0, err
			}
			pos += n
		}
		return pos, nil
	}
	return 0, protoErr("unknown reply type '%c'", b[0])
}

// ArrayHeader returns the element count of an array reply and the length
// of its "*N\r\n" header, after which the elements follow.
func ArrayHeader(raw []byte) (count, header int, err error) {
	if len(raw) == 0 || raw[0] != '*' {
		return 0, 0, protoErr("not an array reply")
	}
	c, t, ok := line(raw)
	if !ok || c < 0 {
		return 0, 0, protoErr("invalid multibulk length")
	}
	n, valid := parseInt(raw[1:c])
	if !valid || n < 0 || n > MaxArgs {
		return 0, 0, protoErr("invalid multibulk length")
	}
	return int(n), t, nil
}

// ReplyLen returns the length of the complete reply at b's start, 0 when
// b holds only part of one.
func ReplyLen(b []byte) (int, error) { return parseReply(b, 1) }

// AppendCommand appends args as a RESP array of bulk strings.
func AppendCommand(b []byte, args ...[]byte) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = AppendBulk(b, a)
	}
	return b
}

// AppendBulk appends a bulk string.
func AppendBulk(b, s []byte) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, '\r', '\n')
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// AppendError appends an error reply; newlines in msg become spaces.
func AppendError(b []byte, msg string) []byte {
	b = append(b, '-')
	b = append(b, bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, []byte(msg))...)
	return append(b, '\r', '\n')
}

// AppendInt appends an integer reply.
func AppendInt(b []byte, n int64) []byte {
	b = append(b, ':')
	b = strconv.AppendInt(b, n, 10)
	return append(b, '\r', '\n')
}

// Int parses an integer reply.
func Int(raw []byte) (int64, bool) {
	if len(raw) < 3 || raw[0] != ':' {
		return 0, false
	}
	return parseInt(raw[1 : len(raw)-2])
}
