package httpproxy

import "errors"

// chunkScan follows a chunked body as it passes through unchanged (the
// engine relays chunked responses byte for byte), to find where it ends
// and to check its framing strictly, by the rules of readChunkSize and
// skipTrailers: hex sizes of at most 15 digits, then only whitespace up to
// the extensions, extensions without control characters, CRLF line ends,
// at most 100 trailer lines of at most 4 KiB each, each a field
// validTrailer accepts. Its zero value is at the start of a body.
type chunkScan struct {
	state  uint8
	ext    bool  // the size line's extensions have begun (a ';' was seen)
	left   int64 // data bytes left of the current chunk
	digits int
	line   int      // bytes of the current size or trailer line
	lines  int      // trailer lines
	name   [19]byte // the start of the current trailer field's name: as long as the longest forbidden one
}

const (
	csSize    = iota // in the size's hex digits
	csExt            // after the size: whitespace or an extension, until CR
	csSizeLF         // CR of the size line seen
	csData           // in a chunk's data
	csDataCR         // after the data: CR expected
	csDataLF         // LF expected
	csTrailer        // at the start of a trailer line (or the final CRLF)
	csName           // in a trailer field's name, until ':'
	csValue          // in a trailer field's value, until CR
	csLineLF         // CR of a trailer line seen
	csEndLF          // CR of the final blank line seen
	csDone
)

var errChunkScan = errors.New("malformed chunked encoding from upstream")

// scan consumes b, returning how many of its bytes belong to the body
// (all of them unless the body ends inside b) and whether the body has
// ended.
func (s *chunkScan) scan(b []byte) (n int, done bool, err error) {
	for n < len(b) {
		c := b[n]
		switch s.state {
		case csSize:
			d, ok := hexDigit(c)
			if !ok {
				if s.digits == 0 {
					return n, false, errChunkScan
				}
				s.state = csExt
				continue // the same byte, as part of the rest of the line
			}
			if s.digits++; s.digits > 15 {
				return n, false, errChunkScan
			}
			s.left = s.left<<4 | int64(d)
		case csExt:
			switch {
			case c == '\r':
				s.state = csSizeLF
			case c < ' ' && c != '\t' || c == 0x7f:
				return n, false, errChunkScan
			case c == ';':
				s.ext = true
			case !s.ext && c != ' ' && c != '\t':
				return n, false, errChunkScan // not a digit, not an extension
			}
			if s.line++; s.line > 4096 {
				return n, false, errChunkScan
			}
		case csSizeLF:
			if c != '\n' {
				return n, false, errChunkScan
			}
			s.digits, s.line, s.ext = 0, 0, false
			if s.left == 0 {
				s.state = csTrailer
			} else {
				s.state = csData
			}
		case csData:
			take := min(int64(len(b)-n), s.left)
			s.left -= take
			n += int(take)
			if s.left == 0 {
				s.state = csDataCR
			}
			continue
		case csDataCR:
			if c != '\r' {
				return n, false, errChunkScan
			}
			s.state = csDataLF
		case csDataLF:
			if c != '\n' {
				return n, false, errChunkScan
			}
			s.state = csSize
		case csTrailer:
			if c == '\r' {
				s.state = csEndLF
				break
			}
			if s.lines++; s.lines > 100 {
				return n, false, errChunkScan
			}
			s.line = 0
			s.state = csName
			continue
		case csName:
			switch {
			case c == ':':
				if s.line == 0 || s.line <= len(s.name) && forbiddenTrailer(s.name[:s.line]) {
					return n, false, errChunkScan
				}
				s.state = csValue
			case !tokenChar(c):
				return n, false, errChunkScan // obs-fold, a space before the colon, a control
			case s.line < len(s.name):
				s.name[s.line] = c
			}
			if s.line++; s.line > 4096 {
				return n, false, errChunkScan
			}
		case csValue:
			switch {
			case c == '\r':
				s.state = csLineLF
			case c < ' ' && c != '\t' || c == 0x7f:
				return n, false, errChunkScan
			}
			if s.line++; s.line > 4096 {
				return n, false, errChunkScan
			}
		case csLineLF:
			if c != '\n' {
				return n, false, errChunkScan
			}
			s.state = csTrailer
		case csEndLF:
			if c != '\n' {
				return n, false, errChunkScan
			}
			s.state = csDone
			return n + 1, true, nil
		}
		n++
	}
	return n, false, nil
}
