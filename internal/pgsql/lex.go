package pgsql

// The lexer follows PostgreSQL's scanner (src/backend/parser/scan.l) only as
// far as statement boundaries and words need: it never builds a token value,
// it returns offsets into the text, so lexing allocates nothing.

type kind uint8

const (
	tEOF    kind = iota
	tWord        // unquoted identifier or keyword
	tQIdent      // "quoted identifier"; text keeps the quotes
	tString      // any string literal: '..', E'..', $tag$..$tag$
	tNumber      // numeric literal
	tParam       // $1
	tPunct       // one byte of punctuation or operator
)

type token struct {
	kind       kind
	start, end int // s[start:end] is the token's text
}

type lexer struct {
	s string
	i int
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// identStart and identCont follow scan.l: letters, '_' and any byte >= 0x80
// start an identifier; digits and '$' may follow.
func identStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func identCont(c byte) bool {
	return identStart(c) || c >= '0' && c <= '9' || c == '$'
}

// next returns the next token, skipping whitespace and comments. An
// unterminated comment, literal or quoted identifier runs to the end of the
// text: PostgreSQL rejects such a text as a whole, so nothing in it runs.
func (l *lexer) next() token {
	s := l.s
	for l.i < len(s) {
		c := s[l.i]
		switch {
		case isSpace(c):
			l.i++
		case c == '-' && l.i+1 < len(s) && s[l.i+1] == '-':
			l.i += 2
			for l.i < len(s) && s[l.i] != '\n' && s[l.i] != '\r' {
				l.i++
			}
		case c == '/' && l.i+1 < len(s) && s[l.i+1] == '*':
			l.skipBlockComment()
		default:
			return l.token(c)
		}
	}
	return token{kind: tEOF, start: len(s), end: len(s)}
}

// skipBlockComment skips a /* */ comment; they nest in PostgreSQL.
func (l *lexer) skipBlockComment() {
	s := l.s
	depth := 0
	for l.i < len(s) {
		if s[l.i] == '/' && l.i+1 < len(s) && s[l.i+1] == '*' {
			depth++
			l.i += 2
		} else if s[l.i] == '*' && l.i+1 < len(s) && s[l.i+1] == '/' {
			depth--
			l.i += 2
			if depth == 0 {
				return
			}
		} else {
			l.i++
		}
	}
}

func (l *lexer) token(c byte) token {
	s, start := l.s, l.i
	switch {
	case c == '\'':
		l.i++
		l.skipQuoted('\'', false)
		return token{tString, start, l.i}
	case c == '"':
		l.i++
		l.skipQuoted('"', false)
		return token{tQIdent, start, l.i}
	case (c == 'e' || c == 'E') && l.i+1 < len(s) && s[l.i+1] == '\'':
		// E'..': backslash escapes, as well as ''.
		l.i += 2
		l.skipQuoted('\'', true)
		return token{tString, start, l.i}
	case identStart(c):
		l.i++
		for l.i < len(s) && identCont(s[l.i]) {
			l.i++
		}
		return token{tWord, start, l.i}
	case c >= '0' && c <= '9' || c == '.' && l.i+1 < len(s) && s[l.i+1] >= '0' && s[l.i+1] <= '9':
		// Digits, letters (exponents, 0x, 1_000, and the junk PostgreSQL
		// rejects), dots and a sign after an exponent.
		l.i++
		for l.i < len(s) {
			d := s[l.i]
			if d >= '0' && d <= '9' || d == '.' || d == '_' || d >= 'a' && d <= 'z' || d >= 'A' && d <= 'Z' {
				l.i++
			} else if (d == '+' || d == '-') && (s[l.i-1] == 'e' || s[l.i-1] == 'E') {
				l.i++
			} else {
				break
			}
		}
		return token{tNumber, start, l.i}
	case c == '$':
		if end, ok := dollarTag(s, l.i); ok {
			tag := s[l.i:end]
			l.i = end
			if j := indexFrom(s, tag, l.i); j >= 0 {
				l.i = j + len(tag)
			} else {
				l.i = len(s)
			}
			return token{tString, start, l.i}
		}
		l.i++
		for l.i < len(s) && s[l.i] >= '0' && s[l.i] <= '9' {
			l.i++
		}
		return token{tParam, start, l.i}
	}
	l.i++
	return token{tPunct, start, l.i}
}

// skipQuoted moves past the closing quote q, treating a doubled quote as
// part of the text, and a backslash as an escape when backslash is set.
func (l *lexer) skipQuoted(q byte, backslash bool) {
	s := l.s
	for l.i < len(s) {
		c := s[l.i]
		l.i++
		if backslash && c == '\\' {
			l.i++
			continue
		}
		if c == q {
			if l.i < len(s) && s[l.i] == q {
				l.i++
				continue
			}
			return
		}
	}
	if l.i > len(s) {
		l.i = len(s)
	}
}

// dollarTag reports whether s[i:] starts a dollar-quote delimiter ($$ or
// $tag$, the tag an identifier without '$') and returns the end of it.
func dollarTag(s string, i int) (int, bool) {
	j := i + 1
	if j < len(s) && s[j] == '$' {
		return j + 1, true
	}
	if j >= len(s) || !identStart(s[j]) {
		return 0, false
	}
	for j++; j < len(s); j++ {
		c := s[j]
		if c == '$' {
			return j + 1, true
		}
		if !identStart(c) && !(c >= '0' && c <= '9') {
			return 0, false
		}
	}
	return 0, false
}

// indexFrom is strings.Index(s[from:], sub)+from, or -1.
func indexFrom(s, sub string, from int) int {
	n := len(sub)
	for i := from; i+n <= len(s); i++ {
		if s[i] == sub[0] && s[i:i+n] == sub {
			return i
		}
	}
	return -1
}

// is reports whether the token is the unquoted word w (w in upper case),
// compared without regard to ASCII case, as PostgreSQL folds keywords.
func (t token) is(s, w string) bool {
	if t.kind != tWord || t.end-t.start != len(w) {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := s[t.start+i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != w[i] {
			return false
		}
	}
	return true
}

// punct reports whether the token is the punctuation byte c.
func (t token) punct(s string, c byte) bool {
	return t.kind == tPunct && s[t.start] == c
}

// name reports whether the token names the identifier n (lower case): an
// unquoted word in any case, or a quoted identifier spelled exactly so.
func (t token) name(s, n string) bool {
	if t.kind == tQIdent {
		return t.end-t.start == len(n)+2 && s[t.start+1:t.end-1] == n
	}
	if t.kind != tWord || t.end-t.start != len(n) {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := s[t.start+i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != n[i] {
			return false
		}
	}
	return true
}
