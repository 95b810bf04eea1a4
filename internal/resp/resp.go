// Package resp reads RESP2 messages (Redis's protocol) without copying:
// commands as argument slices into the read buffer, replies as the raw
// bytes of one complete reply, ready to be forwarded as they are.
//
// Commands are taken exactly as Redis takes them (ReadCommand), so that
// what a proxy forwards on a shared server connection never makes the
// server fail it. Memory is bounded by what actually arrives, never by a
// length a peer declares: a "$1000000000" header allocates nothing until
// the bytes come, every length is checked against limits first, and
// buffers grown for a large message are given back after it.
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
	MaxArgs     = 1 << 20   // multibulk length (Redis 7 takes up to INT_MAX; older ones this)
	MaxInline   = 64 << 10  // PROTO_INLINE_MAX_SIZE: an inline command (or status reply) without LF
	MaxQuery    = 1 << 30   // client-query-buffer-limit
	MaxDepth    = 128       // nesting of array replies
	minReadSize = 4 << 10
	// maxKeep is the buffer a Reader keeps between commands; a larger one
	// (grown for a large command) is given back once that command is read.
	maxKeep = 64 << 10
	// maxKeepArgs is the argument slice a Reader keeps between commands.
	maxKeepArgs = 1024
	// lenDigits is the longest number string2ll takes (LONG_STR_SIZE-1).
	lenDigits = 20
)

// Before AUTH, when the listener has a password: Redis's "unauthenticated
// multibulk length" and "unauthenticated bulk length", and the query
// buffer Redis allows an unauthenticated client.
const (
	unauthArgs  = 10
	unauthBulk  = 16384
	unauthQuery = 1 << 20
)

// ProtocolError is a malformed message. The connection cannot be resynced
// after one: the server (or proxy) answers with the error and closes.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "Protocol error: " + e.Msg }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// ErrQueryBuffer: a client's unread command outgrew the query buffer
// limit. Redis closes such a client without a reply.
var ErrQueryBuffer = errors.New("resp: query buffer limit reached")

// Reader reads messages from an io.Reader. Slices it returns are valid
// until the next call. A command or reply that arrives over several reads
// is parsed once: the parse resumes where the last read stopped, as
// Redis's processMultibulkBuffer does.
type Reader struct {
	rd         io.Reader
	buf        []byte
	start, end int
	args       [][]byte

	cmd   command // the command being read, from buf[start]
	reply reply   // the reply being read, from buf[start]
	enc   []byte  // a command re-encoded as a canonical multibulk
	words []byte  // the arguments of an inline command, unquoted

	maxArgs, maxBulk, maxQuery int64

	// steps counts the length lines and bulks parsed, so that tests can
	// check that a command trickling in is parsed once.
	steps int
}

// command is the parse state of the command at buf[start]: Redis's
// reqtype, multibulklen and bulklen.
type command struct {
	pos       int   // bytes parsed (multibulk) or scanned for LF (inline), from start
	multi     bool  // the "*N" line is read
	left      int64 // elements still to read
	bulk      int64 // length of the next bulk; -1: its line is not read yet
	canonical bool  // every line ended in CRLF: the bytes can be forwarded as they are
	offs      []int // inline: start and end of each argument in words
}

// reply is the parse state of the reply at buf[start].
type reply struct {
	pos  int     // bytes of complete elements and array headers, from start
	open []int64 // elements still to read of each array open, outermost first
}

// NewReader returns a Reader on rd, with Redis's limits for an
// authenticated client.
func NewReader(rd io.Reader) *Reader {
	r := &Reader{rd: rd, buf: make([]byte, minReadSize)}
	r.RequireAuth(false)
	return r
}

// Reset discards what r holds and makes it read from rd, keeping its
// buffer unless that grew large: one Reader can serve many connections in
// turn. The limits go back to those of an authenticated client.
func (r *Reader) Reset(rd io.Reader) {
	r.rd, r.start, r.end = rd, 0, 0
	r.cmd = command{offs: r.cmd.offs[:0]}
	r.reply = reply{open: r.reply.open[:0]}
	clear(r.args[:cap(r.args)])
	r.args = r.args[:0]
	r.shrink()
	r.RequireAuth(false)
}

// RequireAuth sets the limits of commands to come: with on, those Redis
// applies to a client that has not authenticated yet (10 arguments of at
// most 16384 bytes, a 1 MiB query buffer), else its defaults.
func (r *Reader) RequireAuth(on bool) {
	if on {
		r.maxArgs, r.maxBulk, r.maxQuery = unauthArgs, unauthBulk, unauthQuery
	} else {
		r.maxArgs, r.maxBulk, r.maxQuery = MaxArgs, MaxBulk, MaxQuery
	}
}

// Buffered reports whether a complete or partial message is already in the
// buffer (a pipelining client sent more): the caller can keep reading
// before flushing replies.
func (r *Reader) Buffered() int { return r.end - r.start }

// ReadCommand reads one command: a multibulk array of bulk strings, or an
// inline command, accepted and split exactly as Redis's
// processMultibulkBuffer and processInlineBuffer do, with their error
// texts. An empty command (an empty line, "*0") has no args. raw is the
// command as a canonical multibulk, safe to forward to a Redis server on a
// shared connection: the bytes as received when they are one, else the
// arguments re-encoded (an inline command, a line ended by CR and another
// byte than LF).
func (r *Reader) ReadCommand() (args [][]byte, raw []byte, err error) {
	r.shrink()
	for {
		n, err := r.parseCommand(r.buf[r.start:r.end])
		if err != nil {
			return nil, nil, err
		}
		if n > 0 {
			return r.finishCommand(n)
		}
		if err := r.fill(r.need(), r.maxQuery); err != nil {
			return nil, nil, err
		}
	}
}

// finishCommand returns the command of n bytes at start, parsed, and
// moves past it.
func (r *Reader) finishCommand(n int) (args [][]byte, raw []byte, err error) {
	c := &r.cmd
	raw = r.buf[r.start : r.start+n]
	if !c.canonical {
		r.enc = AppendCommand(r.enc[:0], r.args...)
		raw = r.enc
	}
	r.start += n
	*c = command{offs: c.offs[:0]}
	return r.args, raw, nil
}

// ReadReply reads one complete reply and returns its raw bytes.
func (r *Reader) ReadReply() ([]byte, error) {
	r.shrink()
	// The usual reply, a scalar already in the buffer, without the state.
	if r.reply.pos == 0 {
		if n, elems, err := replyHead(r.buf[r.start:r.end]); err == nil && n > 0 && elems == 0 {
			raw := r.buf[r.start : r.start+n]
			r.start += n
			return raw, nil
		}
	}
	for {
		n, err := r.resumeReply(r.buf[r.start:r.end])
		if err != nil {
			return nil, err
		}
		if n > 0 {
			raw := r.buf[r.start : r.start+n]
			r.start += n
			return raw, nil
		}
		if err := r.fill(0, math.MaxInt64); err != nil {
			return nil, err
		}
	}
}

// shrink gives back a buffer (and argument slices) grown for a large
// message once what is left in it is small (as Redis's clientsCronResizeQueryBuffer does). It runs
// before a message is read: the slices of the last one stay valid until
// then.
func (r *Reader) shrink() {
	if len(r.buf) > maxKeep || cap(r.args) > maxKeepArgs || cap(r.cmd.offs) > 2*maxKeepArgs ||
		cap(r.enc) > maxKeep || cap(r.words) > maxKeep {
		r.shrinkSlow()
	}
}

// shrinkSlow is shrink once something grew.
func (r *Reader) shrinkSlow() {
	if r.cmd.pos == 0 && cap(r.args) > maxKeepArgs {
		r.args = nil
	}
	if r.cmd.pos == 0 && cap(r.cmd.offs) > 2*maxKeepArgs {
		r.cmd.offs = nil
	}
	if cap(r.enc) > maxKeep {
		r.enc = nil
	}
	if cap(r.words) > maxKeep {
		r.words = nil
	}
	if len(r.buf) <= maxKeep || r.end-r.start > minReadSize {
		return
	}
	r.moveTo(make([]byte, minReadSize))
}

// moveTo moves the message at start to the front of nb (which may be
// r.buf) and makes it the buffer. The arguments of a multibulk parsed so
// far are slices of the buffer up to its end: their offsets are their
// capacities, and they are pointed at the new place.
func (r *Reader) moveTo(nb []byte) {
	if r.cmd.multi {
		for i, a := range r.args {
			off := cap(r.buf) - cap(a) - r.start
			r.args[i] = nb[off : off+len(a)]
		}
	}
	r.end = copy(nb, r.buf[r.start:r.end])
	r.start, r.buf = 0, nb
}

// need is the length the command being read will have at least, as far as
// its lines tell (0: unknown).
func (r *Reader) need() int {
	c := &r.cmd
	if !c.multi || c.bulk < 0 {
		return 0
	}
	return c.pos + int(c.bulk) + 2
}

// fill reads more bytes, moving or growing the buffer as needed; need is
// the length the message at start will have at least. The buffer never
// grows beyond limit: the query buffer limit for commands; none for
// replies, whose size a client asked for (failing a large one would fail
// every request on a shared server connection; Redis's own output buffer
// limit for normal clients is none too).
func (r *Reader) fill(need int, limit int64) error {
	if r.start > 0 && r.start == r.end {
		r.start, r.end = 0, 0
	}
	if r.end == len(r.buf) {
		if err := r.makeRoom(need, limit); err != nil {
			return err
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

// makeRoom makes room after end: it moves the message at start to the
// front, or doubles the buffer, up to the query buffer limit and to need
// when that is known (a large bulk's buffer ends at its size), never more:
// memory follows the bytes that arrive, not a declared length.
func (r *Reader) makeRoom(need int, limit int64) error {
	if r.start > 0 {
		r.moveTo(r.buf)
		return nil
	}
	if int64(r.end) >= limit {
		return ErrQueryBuffer
	}
	size := 2 * len(r.buf)
	if need > len(r.buf) && need < size {
		size = need
	}
	if int64(size) > limit {
		size = int(limit)
	}
	r.moveTo(make([]byte, size))
	return nil
}

// ParseInt parses a decimal int64 exactly as Redis's string2ll does: at
// most 20 bytes, an optional '-', no '+', no leading zeros, no "-0", no
// spaces, and no overflow.
func ParseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > lenDigits {
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' || n > math.MaxUint64/10 {
			return 0, false
		}
		d := uint64(c - '0')
		if n*10 > math.MaxUint64-d {
			return 0, false
		}
		n = n*10 + d
	}
	switch {
	case !neg && n > math.MaxInt64, neg && n > math.MaxInt64+1:
		return 0, false
	case neg:
		return int64(-n), true
	}
	return int64(n), true
}

// parseCommand resumes parsing the command at b's start; it returns its
// length once it is complete, 0 while more bytes are needed.
func (r *Reader) parseCommand(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if b[0] != '*' {
		return r.parseInline(b)
	}
	return r.parseMultibulk(b)
}

// parseMultibulk resumes parsing "*N" and N "$len" bulks where the last
// call stopped.
func (r *Reader) parseMultibulk(b []byte) (int, error) {
	c := &r.cmd
	if !c.multi {
		count, next, err := r.lengthLine(b, "mbulk")
		if err != nil || next == 0 {
			return 0, err
		}
		switch { // Redis 7 takes up to INT_MAX; attache, as Redis 6, MaxArgs
		case count > math.MaxInt32:
			return 0, protoErr("invalid multibulk length")
		case count > r.maxArgs && r.maxArgs < MaxArgs:
			return 0, protoErr("unauthenticated multibulk length")
		case count > MaxArgs:
			return 0, protoErr("invalid multibulk length")
		}
		c.multi, c.left, c.bulk, c.pos = true, count, -1, next
		c.canonical = b[next-1] == '\n'
		r.args = r.args[:0]
		if count <= 0 { // an empty command, as in Redis
			return next, nil
		}
	}
	for c.left > 0 {
		if c.bulk < 0 {
			if c.pos >= len(b) {
				return 0, nil
			}
			size, n, err := r.lengthLine(b[c.pos:], "bulk")
			if err != nil || n == 0 {
				return 0, err
			}
			switch {
			case size < 0 || size > MaxBulk:
				return 0, protoErr("invalid bulk length")
			case size > r.maxBulk:
				return 0, protoErr("unauthenticated bulk length")
			}
			c.canonical = c.canonical && b[c.pos+n-1] == '\n'
			c.bulk, c.pos = size, c.pos+n
		}
		if int64(len(b)-c.pos) < c.bulk+2 {
			return 0, nil
		}
		end := c.pos + int(c.bulk)
		// Redis skips the two bytes after a bulk, whatever they are.
		c.canonical = c.canonical && b[end] == '\r' && b[end+1] == '\n'
		r.args = append(r.args, b[c.pos:end])
		c.pos, c.bulk = end+2, -1
		c.left--
		r.steps++
	}
	return c.pos, nil
}

// lengthLine reads the "*N" or "$N" line at b's start as Redis does: up to
// the first CR, which must be followed by one more byte (any), with N as
// string2ll takes it. It returns N and the length of the line, 0 when the
// line is not complete yet. what names the line in errors ("mbulk" or
// "bulk").
//
// Redis looks for the CR with strchr, which stops at a NUL: a NUL before
// the CR makes it wait until 64 KiB are buffered and then fail with "too
// big ... count string"; this fails at once with that text. A line with
// more digits than string2ll takes fails at once too (Redis fails once
// its CR arrives).
func (r *Reader) lengthLine(b []byte, what string) (n int64, length int, err error) {
	r.steps++
	// The usual line, "*2\r\n" or "$3\r\n", without the general scan:
	// a number of at most 18 digits, no sign, no leading zero.
	if len(b) >= 4 && '1' <= b[1] && b[1] <= '9' && (what != "bulk" || b[0] == '$') {
		v := int64(b[1] - '0')
		i := 2
		for ; i < len(b) && i < 19 && '0' <= b[i] && b[i] <= '9'; i++ {
			v = v*10 + int64(b[i]-'0')
		}
		if i+1 < len(b) && b[i] == '\r' {
			return v, i + 2, nil
		}
	}
	return r.lengthLineSlow(b, what)
}

// lengthLineSlow is lengthLine for every other line.
func (r *Reader) lengthLineSlow(b []byte, what string) (n int64, length int, err error) {
	w := b[:min(len(b), 2+lenDigits)]
	cr := bytes.IndexByte(w, '\r')
	if nul := bytes.IndexByte(w, 0); nul >= 0 && (cr < 0 || nul < cr) {
		return 0, 0, protoErr("too big %s count string", what)
	}
	if cr < 0 {
		if len(w) < 2+lenDigits {
			return 0, 0, nil
		}
		cr = len(w) // string2ll will refuse it
	} else if cr+1 >= len(b) {
		return 0, 0, nil // the byte after CR is not here yet
	}
	if what == "bulk" && b[0] != '$' {
		return 0, 0, protoErr("expected '$', got '%c'", b[0])
	}
	n, ok := ParseInt(b[1:cr])
	if !ok {
		if what == "bulk" {
			return 0, 0, protoErr("invalid bulk length")
		}
		return 0, 0, protoErr("invalid multibulk length")
	}
	return n, cr + 2, nil
}

// parseInline parses an inline command ("GET key\r\n", as telnet users
// send) as Redis's processInlineBuffer does: the line up to LF (a CR
// before it dropped) split by sdssplitargs rules. The scan for LF resumes
// where the last call stopped.
func (r *Reader) parseInline(b []byte) (int, error) {
	c := &r.cmd
	i := bytes.IndexByte(b[c.pos:], '\n')
	scanned := b[c.pos:]
	if i >= 0 {
		scanned = scanned[:i]
	}
	// Redis looks for LF with strchr, which stops at a NUL: such a
	// command waits until 64 KiB are buffered and then fails.
	if bytes.IndexByte(scanned, 0) >= 0 {
		return 0, protoErr("too big inline request")
	}
	if i < 0 {
		c.pos = len(b)
		if len(b) > MaxInline {
			return 0, protoErr("too big inline request")
		}
		return 0, nil
	}
	nl := c.pos + i
	text := b[:nl]
	if len(text) > 0 && text[len(text)-1] == '\r' {
		text = text[:len(text)-1]
	}
	r.steps++
	if !r.splitArgs(text) {
		return 0, protoErr("unbalanced quotes in request")
	}
	c.canonical = false
	return nl + 1, nil
}

// splitArgs splits an inline command line into r.args as Redis's
// sdssplitargs does; false when it would fail (unbalanced quotes, a
// closing quote not followed by a space). Outside quotes an argument ends
// at a space, tab, CR or LF; between arguments every C isspace byte is
// skipped. In "..." the escapes \xHH, \n, \r, \t, \b, \a and \<any> are
// decoded; in '...' only \'. The unquoted bytes go to r.words.
func (r *Reader) splitArgs(line []byte) bool {
	c := &r.cmd
	c.offs, r.words = c.offs[:0], r.words[:0]
	p := 0
	for {
		for p < len(line) && isSpace(line[p]) {
			p++
		}
		if p == len(line) {
			break
		}
		start := len(r.words)
		var ok bool
		if p, ok = r.word(line, p); !ok {
			return false
		}
		c.offs = append(c.offs, start, len(r.words))
	}
	r.args = r.args[:0]
	for i := 0; i < len(c.offs); i += 2 {
		r.args = append(r.args, r.words[c.offs[i]:c.offs[i+1]:c.offs[i+1]])
	}
	return true
}

// word appends the argument at line[p:] to r.words and returns where it
// ends.
func (r *Reader) word(line []byte, p int) (int, bool) {
	at := func(i int) byte { // C's view of the line: NUL past its end
		if i < len(line) {
			return line[i]
		}
		return 0
	}
	inq, insq := false, false
	for {
		ch := at(p)
		switch {
		case inq:
			switch {
			case ch == '\\' && at(p+1) == 'x' && isHex(at(p+2)) && isHex(at(p+3)):
				r.words = append(r.words, unhex(at(p+2))<<4|unhex(at(p+3)))
				p += 3
			case ch == '\\' && at(p+1) != 0:
				p++
				r.words = append(r.words, unescape(line[p]))
			case ch == '"':
				if n := at(p + 1); n != 0 && !isSpace(n) {
					return 0, false // closing quote must be followed by a space
				}
				return p + 1, true
			case ch == 0:
				return 0, false // unterminated quotes
			default:
				r.words = append(r.words, ch)
			}
		case insq:
			switch {
			case ch == '\\' && at(p+1) == '\'':
				p++
				r.words = append(r.words, '\'')
			case ch == '\'':
				if n := at(p + 1); n != 0 && !isSpace(n) {
					return 0, false
				}
				return p + 1, true
			case ch == 0:
				return 0, false
			default:
				r.words = append(r.words, ch)
			}
		default:
			switch ch {
			case ' ', '\n', '\r', '\t', 0:
				return min(p+1, len(line)), true
			case '"':
				inq = true
			case '\'':
				insq = true
			default:
				r.words = append(r.words, ch)
			}
		}
		p++
	}
}

// isSpace is C's isspace in the C locale.
func isSpace(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' }

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
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

// parseReply returns the length of the complete reply at b's start, 0
// when more bytes are needed; depth is the nesting of b's start.
func parseReply(b []byte, depth int) (int, error) {
	n, elems, err := replyHead(b)
	if err != nil || n == 0 || elems == 0 {
		return n, err
	}
	if depth >= MaxDepth {
		return 0, protoErr("reply nested too deeply")
	}
	pos := n
	for i := int64(0); i < elems; i++ {
		m, err := parseReply(b[pos:], depth+1)
		if err != nil || m == 0 {
			return 0, err
		}
		pos += m
	}
	return pos, nil
}

// resumeReply parses the reply at b's start from where the last call
// stopped (r.reply), so that a large array arriving over many reads is
// parsed once; it returns the reply's length once it is complete.
func (r *Reader) resumeReply(b []byte) (int, error) {
	st := &r.reply
	for {
		if st.pos >= len(b) {
			return 0, nil
		}
		n, elems, err := replyHead(b[st.pos:])
		if err != nil || n == 0 {
			return 0, err
		}
		r.steps++
		st.pos += n
		if elems > 0 {
			if len(st.open) >= MaxDepth {
				return 0, protoErr("reply nested too deeply")
			}
			st.open = append(st.open, elems)
			continue
		}
		for len(st.open) > 0 { // an element is complete: close the arrays it completes
			top := len(st.open) - 1
			if st.open[top]--; st.open[top] > 0 {
				break
			}
			st.open = st.open[:top]
		}
		if len(st.open) == 0 {
			n, st.pos = st.pos, 0
			return n, nil
		}
	}
}

// replyHead reads the element at b's start: a complete scalar reply (or
// null or empty array), with elems 0, or the header line of an array of
// elems elements. n is its length, 0 when more bytes are needed.
func replyHead(b []byte) (n int, elems int64, err error) {
	if len(b) == 0 {
		return 0, 0, nil
	}
	c, t, ok := line(b)
	if !ok {
		switch {
		case (b[0] == '$' || b[0] == '*' || b[0] == ':') && len(b) > 32:
			return 0, 0, protoErr("invalid length line")
		case len(b) > MaxInline:
			return 0, 0, protoErr("status line too long")
		}
		return 0, 0, nil
	}
	if c < 0 {
		return 0, 0, protoErr("line not terminated by CRLF")
	}
	switch b[0] {
	case '+', '-':
		return t, 0, nil
	case ':':
		if _, valid := ParseInt(b[1:c]); !valid {
			return 0, 0, protoErr("invalid integer")
		}
		return t, 0, nil
	case '$':
		size, valid := ParseInt(b[1:c])
		if !valid || size < -1 || size > MaxBulk {
			return 0, 0, protoErr("invalid bulk length")
		}
		if size == -1 {
			return t, 0, nil
		}
		if int64(len(b)-t) < size+2 {
			return 0, 0, nil
		}
		end := t + int(size)
		if b[end] != '\r' || b[end+1] != '\n' {
			return 0, 0, protoErr("bulk string not terminated by CRLF")
		}
		return end + 2, 0, nil
	case '*':
		count, valid := ParseInt(b[1:c])
		if !valid || count < -1 { // any count: memory follows the bytes
			return 0, 0, protoErr("invalid multibulk length")
		}
		return t, max(count, 0), nil
	}
	return 0, 0, protoErr("unknown reply type '%c'", b[0])
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
	n, valid := ParseInt(raw[1:c])
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
	return ParseInt(raw[1 : len(raw)-2])
}
