package grpcjson

import (
	"errors"
	"fmt"
	"strings"
)

// Template is a compiled google.api.http path template:
//
//	Template = "/" Segments [ Verb ] ;
//	Segments = Segment { "/" Segment } ;
//	Segment  = "*" | "**" | LITERAL | Variable ;
//	Variable = "{" FieldPath [ "=" Segments ] "}" ;
//	FieldPath = IDENT { "." IDENT } ;
//	Verb     = ":" LITERAL ;
//
// A variable without "=" is "{field=*}". "**" matches zero or more
// segments and may only be the last segment. Variables do not nest, and a
// field is bound once. A Template is immutable and safe for concurrent use.
type Template struct {
	raw  string
	segs []segment
	vars []variable
	verb string
}

type segKind uint8

const (
	segLiteral segKind = iota
	segStar            // *: one non-empty segment
	segDouble          // **: zero or more segments, the last
)

type segment struct {
	kind segKind
	lit  string
}

// variable binds the segments [start, end) of a template to a field path;
// end is -1 when the variable ends with "**" (to the end of the path).
type variable struct {
	field      []string
	start, end int
}

// maxTemplate bounds a template's length: it comes from a descriptor file.
const maxTemplate = 4096

// ParseTemplate compiles a path template.
func ParseTemplate(s string) (*Template, error) {
	if len(s) > maxTemplate {
		return nil, fmt.Errorf("path template longer than %d bytes", maxTemplate)
	}
	p := &tparser{s: s, t: &Template{raw: s}}
	if err := p.parse(); err != nil {
		return nil, fmt.Errorf("path template %q: %w", s, err)
	}
	return p.t, nil
}

// String is the template as written.
func (t *Template) String() string { return t.raw }

// Fields are the field paths the template binds, in order.
func (t *Template) Fields() []string {
	out := make([]string, len(t.vars))
	for i, v := range t.vars {
		out[i] = strings.Join(v.field, ".")
	}
	return out
}

// literals counts the literal segments and the verb: among templates that
// match a path, the one with more of them is the more specific.
func (t *Template) literals() int {
	n := 0
	for _, s := range t.segs {
		if s.kind == segLiteral {
			n++
		}
	}
	if t.verb != "" {
		n++
	}
	return n
}

type tparser struct {
	s     string
	i     int
	t     *Template
	inVar bool
}

func (p *tparser) parse() error {
	if !strings.HasPrefix(p.s, "/") {
		return errors.New("must start with /")
	}
	p.i = 1
	if err := p.segments(); err != nil {
		return err
	}
	if p.i < len(p.s) && p.s[p.i] == ':' {
		p.i++
		v := p.literal()
		if v == "" {
			return fmt.Errorf("empty verb at offset %d", p.i)
		}
		p.t.verb = v
	}
	if p.i < len(p.s) {
		return fmt.Errorf("unexpected %q at offset %d", p.s[p.i], p.i)
	}
	for i, sg := range p.t.segs {
		if sg.kind == segDouble && i != len(p.t.segs)-1 {
			return errors.New("** must be the last segment")
		}
	}
	seen := map[string]bool{}
	for _, v := range p.t.vars {
		f := strings.Join(v.field, ".")
		if seen[f] {
			return fmt.Errorf("field %q bound twice", f)
		}
		seen[f] = true
	}
	return nil
}

func (p *tparser) segments() error {
	for {
		if err := p.segment(); err != nil {
			return err
		}
		if p.i < len(p.s) && p.s[p.i] == '/' {
			p.i++
			continue
		}
		return nil
	}
}

func (p *tparser) segment() error {
	switch {
	case strings.HasPrefix(p.s[p.i:], "**"):
		p.i += 2
		p.t.segs = append(p.t.segs, segment{kind: segDouble})
	case strings.HasPrefix(p.s[p.i:], "*"):
		p.i++
		p.t.segs = append(p.t.segs, segment{kind: segStar})
	case strings.HasPrefix(p.s[p.i:], "{"):
		if p.inVar {
			return fmt.Errorf("nested variable at offset %d", p.i)
		}
		return p.variable()
	default:
		at := p.i
		lit := p.literal()
		if lit == "" {
			if at < len(p.s) {
				return fmt.Errorf("unexpected %q at offset %d", p.s[at], at)
			}
			return errors.New("empty segment at the end")
		}
		d, _ := unescape(lit, false) // literal() read only whole escapes
		p.t.segs = append(p.t.segs, segment{kind: segLiteral, lit: d})
	}
	return nil
}

func (p *tparser) variable() error {
	p.i++ // {
	var field []string
	for {
		j := p.i
		for p.i < len(p.s) && isIdent(p.s[p.i], p.i == j) {
			p.i++
		}
		if p.i == j {
			return fmt.Errorf("want a field name at offset %d", j)
		}
		field = append(field, p.s[j:p.i])
		if p.i < len(p.s) && p.s[p.i] == '.' {
			p.i++
			continue
		}
		break
	}
	v := variable{field: field, start: len(p.t.segs)}
	if p.i < len(p.s) && p.s[p.i] == '=' {
		p.i++
		p.inVar = true
		if err := p.segments(); err != nil {
			return err
		}
		p.inVar = false
	} else {
		p.t.segs = append(p.t.segs, segment{kind: segStar})
	}
	if p.i >= len(p.s) || p.s[p.i] != '}' {
		return fmt.Errorf("unclosed variable %q", strings.Join(field, "."))
	}
	p.i++
	v.end = len(p.t.segs)
	if p.t.segs[v.end-1].kind == segDouble {
		v.end = -1
	}
	p.t.vars = append(p.t.vars, v)
	return nil
}

// literal reads a literal: unreserved and sub-delim characters, "@", and
// percent-escapes (RFC 3986 pchar without ":").
func (p *tparser) literal() string {
	j := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '%':
			if p.i+2 >= len(p.s) || unhex(p.s[p.i+1]) < 0 || unhex(p.s[p.i+2]) < 0 {
				return p.s[j:p.i]
			}
			p.i += 3
			continue
		case isLiteral(c):
			p.i++
			continue
		}
		break
	}
	return p.s[j:p.i]
}

func isIdent(c byte, first bool) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
}

func isLiteral(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	return strings.IndexByte("-._~!$&'()+,;@", c) >= 0
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// Match matches an escaped request path (URL.EscapedPath) against the
// template and returns the values of its variables, in order, decoded:
// all escapes in a variable of one segment, all but %2F in one of several
// (which keeps its slashes apart from the escaped ones).
func (t *Template) Match(path string) ([]string, bool) {
	if !strings.HasPrefix(path, "/") {
		return nil, false
	}
	p := path[1:]
	if t.verb != "" {
		var ok bool
		if p, ok = strings.CutSuffix(p, ":"+t.verb); !ok {
			return nil, false
		}
	}
	parts := strings.Split(p, "/")
	n := len(t.segs)
	double := n > 0 && t.segs[n-1].kind == segDouble
	if double && len(parts) < n-1 || !double && len(parts) != n {
		return nil, false
	}
	for i, sg := range t.segs {
		switch sg.kind {
		case segLiteral:
			if parts[i] != sg.lit {
				d, ok := unescape(parts[i], false)
				if !ok || d != sg.lit {
					return nil, false
				}
			}
		case segStar:
			if parts[i] == "" {
				return nil, false
			}
		}
	}
	vals := make([]string, len(t.vars))
	for i, v := range t.vars {
		end := v.end
		if end < 0 {
			end = len(parts)
		}
		if v.start > len(parts) {
			return nil, false
		}
		multi := end-v.start != 1 || v.end < 0
		d, ok := unescape(strings.Join(parts[v.start:end], "/"), multi)
		if !ok {
			return nil, false
		}
		vals[i] = d
	}
	return vals, true
}

// unescape decodes percent-escapes in s; keepSlash leaves %2F as it is.
func unescape(s string, keepSlash bool) (string, bool) {
	if strings.IndexByte(s, '%') < 0 {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) || unhex(s[i+1]) < 0 || unhex(s[i+2]) < 0 {
			return "", false
		}
		d := byte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		if keepSlash && d == '/' {
			b.WriteString(s[i : i+3])
		} else {
			b.WriteByte(d)
		}
		i += 2
	}
	return b.String(), true
}
