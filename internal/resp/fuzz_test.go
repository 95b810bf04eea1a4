package resp

import (
	"bytes"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The fuzz targets check the Reader against a model of Redis written
// here from Redis's C (networking.c, util.c, sds.c), on whole inputs.

// string2llModel is Redis's string2ll: what strconv takes in base 10,
// without '+', leading zeros or "-0", in at most 20 bytes.
func string2llModel(b []byte) (int64, bool) {
	s := string(b)
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil, len(s) > 20, strings.HasPrefix(s, "+"),
		strings.HasPrefix(s, "0") && s != "0", strings.HasPrefix(s, "-0"):
		return 0, false
	}
	return n, true
}

// strchrModel is C's strchr on a NUL-terminated buffer: the index of the
// first c at or after from, -1 when a NUL or the end comes first.
func strchrModel(b []byte, from int, c byte) int {
	for i := from; i < len(b); i++ {
		switch b[i] {
		case c:
			return i
		case 0:
			return -1
		}
	}
	return -1
}

// splitargsModel is sdssplitargs, written as the C is.
func splitargsModel(line []byte) ([][]byte, bool) {
	at := func(i int) byte {
		if i < len(line) {
			return line[i]
		}
		return 0
	}
	space := func(c byte) bool { return strings.IndexByte(" \t\n\v\f\r", c) >= 0 && c != 0 }
	hex := func(c byte) bool { return c != 0 && strings.IndexByte("0123456789abcdefABCDEF", c) >= 0 }
	hexVal := func(c byte) byte { v, _ := strconv.ParseUint(string(c), 16, 8); return byte(v) }
	args := [][]byte{}
	p := 0
	for {
		for at(p) != 0 && space(at(p)) {
			p++
		}
		if at(p) == 0 {
			return args, true
		}
		inq, insq, done := false, false, false
		cur := []byte{}
		for !done {
			if inq {
				if at(p) == '\\' && at(p+1) == 'x' && hex(at(p+2)) && hex(at(p+3)) {
					cur = append(cur, hexVal(at(p+2))*16+hexVal(at(p+3)))
					p += 3
				} else if at(p) == '\\' && at(p+1) != 0 {
					p++
					c := map[byte]byte{'n': '\n', 'r': '\r', 't': '\t', 'b': '\b', 'a': '\a'}[at(p)]
					if c == 0 {
						c = at(p)
					}
					cur = append(cur, c)
				} else if at(p) == '"' {
					if at(p+1) != 0 && !space(at(p+1)) {
						return nil, false
					}
					done = true
				} else if at(p) == 0 {
					return nil, false
				} else {
					cur = append(cur, at(p))
				}
			} else if insq {
				if at(p) == '\\' && at(p+1) == '\'' {
					p++
					cur = append(cur, '\'')
				} else if at(p) == '\'' {
					if at(p+1) != 0 && !space(at(p+1)) {
						return nil, false
					}
					done = true
				} else if at(p) == 0 {
					return nil, false
				} else {
					cur = append(cur, at(p))
				}
			} else {
				switch at(p) {
				case ' ', '\n', '\r', '\t', 0:
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					cur = append(cur, at(p))
				}
			}
			if at(p) != 0 {
				p++
			}
		}
		args = append(args, cur)
	}
}

// redisModel is processInputBuffer on the whole input: the commands Redis
// runs, then its protocol error ("" when it waits for more).
func redisModel(in []byte, unauth bool) (cmds [][][]byte, perr string) {
	pos := 0
	for pos < len(in) {
		if in[pos] != '*' {
			nl := strchrModel(in, pos, '\n')
			if nl < 0 {
				if len(in)-pos > MaxInline {
					return cmds, "too big inline request"
				}
				return cmds, ""
			}
			end := nl
			if end > pos && in[end-1] == '\r' {
				end--
			}
			args, ok := splitargsModel(in[pos:end])
			if !ok {
				return cmds, "unbalanced quotes in request"
			}
			cmds, pos = append(cmds, args), nl+1
			continue
		}
		cr := strchrModel(in, pos, '\r')
		if cr < 0 {
			if len(in)-pos > MaxInline {
				return cmds, "too big mbulk count string"
			}
			return cmds, ""
		}
		if cr > len(in)-2 {
			return cmds, ""
		}
		ll, ok := string2llModel(in[pos+1 : cr])
		switch {
		case !ok || ll > math.MaxInt32:
			return cmds, "invalid multibulk length"
		case ll > 10 && unauth:
			return cmds, "unauthenticated multibulk length"
		case ll > MaxArgs: // attache's limit (Redis 6's), for Redis 7's INT_MAX
			return cmds, "invalid multibulk length"
		}
		p := cr + 2
		args := [][]byte{}
		for ; ll > 0; ll-- {
			cr := strchrModel(in, p, '\r')
			if cr < 0 {
				if len(in)-p > MaxInline {
					return cmds, "too big bulk count string"
				}
				return cmds, ""
			}
			if cr > len(in)-2 {
				return cmds, ""
			}
			if in[p] != '$' {
				return cmds, "expected '$', got '" + string(in[p]) + "'"
			}
			l, ok := string2llModel(in[p+1 : cr])
			switch {
			case !ok || l < 0 || l > MaxBulk:
				return cmds, "invalid bulk length"
			case l > 16384 && unauth:
				return cmds, "unauthenticated bulk length"
			}
			p = cr + 2
			if int64(len(in)-p) < l+2 {
				return cmds, ""
			}
			args = append(args, in[p:p+int(l)])
			p += int(l) + 2
		}
		cmds, pos = append(cmds, args), p
	}
	return cmds, ""
}

// FuzzCommands: the Reader, fed the input whole or in chunks, reads the
// commands the model of Redis runs, and refuses the input where Redis
// does, with its text. Known differences: where Redis would wait (a NUL
// before a line's end, more digits than a number can have, more than 1M
// arguments) the Reader refuses at once, and where Redis's own text
// depends on how the bytes arrive ("too big ... count string") any
// protocol error will do.
func FuzzCommands(f *testing.F) {
	for _, tc := range redisCases {
		if len(tc.in) < 4096 {
			f.Add([]byte(tc.in), byte(0), tc.unauth)
			f.Add([]byte(tc.in), byte(3), tc.unauth)
		}
	}
	for _, tc := range commands {
		f.Add([]byte(tc.in+tc.in), byte(1), false)
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk byte, unauth bool) {
		var rd io.Reader = bytes.NewReader(in)
		if chunk%8 != 0 {
			rd = &chunks{parts: split(in, int(chunk%8))}
		}
		r := NewReader(rd)
		r.RequireAuth(unauth)
		got, gotErr, err := readCmds(r)
		if err != nil {
			t.Fatal(err)
		}
		want, wantErr := redisModel(in, unauth)
		if len(got) > len(want) || !slices.EqualFunc(got, want[:len(got)], equalArgs) {
			t.Fatalf("got commands %q, want %q", got, want)
		}
		switch {
		case len(got) < len(want):
			if gotErr == "" || !strings.Contains(gotErr, "too big") && !strings.Contains(gotErr, "invalid multibulk length") {
				t.Fatalf("got %d commands then %q, want %q", len(got), gotErr, want)
			}
		case wantErr == "":
			// Redis waits: the Reader may refuse a line that cannot end well
		case strings.Contains(wantErr, "too big"):
			if gotErr == "" {
				t.Fatalf("got no error, want one (Redis: %q)", wantErr)
			}
		case gotErr != wantErr:
			t.Fatalf("got error %q, want %q", gotErr, wantErr)
		}
	})
}

// split cuts b into pieces of n bytes.
func split(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out, b = append(out, b[:n:n]), b[n:]
	}
	if len(b) == 0 {
		return out
	}
	return append(out, b)
}

// FuzzParseInt: ParseInt agrees with string2ll.
func FuzzParseInt(f *testing.F) {
	for _, s := range []string{"0", "-0", "+1", "007", "9223372036854775807", "-9223372036854775808",
		"9223372036854775808", "18446744073709551616", "1 ", "", "-"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := ParseInt(b)
		want, wantOK := string2llModel(b)
		if got != want || ok != wantOK {
			t.Fatalf("ParseInt(%q) = %d %v, want %d %v", b, got, ok, want, wantOK)
		}
	})
}

// FuzzSplitArgs: an inline command line splits as sdssplitargs splits it.
func FuzzSplitArgs(f *testing.F) {
	for _, tc := range redisCases {
		if i := strings.IndexByte(tc.in, '\n'); i > 0 && tc.in[0] != '*' {
			f.Add([]byte(strings.TrimSuffix(tc.in[:i], "\r")))
		}
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		if bytes.IndexByte(line, 0) >= 0 || bytes.IndexByte(line, '\n') >= 0 {
			return // Redis never splits such a line
		}
		r := NewReader(nil)
		ok := r.splitArgs(line)
		want, wantOK := splitargsModel(line)
		if ok != wantOK {
			t.Fatalf("splitArgs(%q): got ok %v, want %v", line, ok, wantOK)
		}
		if ok && (len(r.args) != len(want) || !equalArgs(r.args, want)) {
			t.Fatalf("splitArgs(%q): got %q, want %q", line, r.args, want)
		}
	})
}
