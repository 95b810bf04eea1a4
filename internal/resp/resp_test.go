package resp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

var commands = []struct {
	name, in string
	want     []string
}{
	{"multibulk", "*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", []string{"GET", "foo"}},
	{"binary arg", "*2\r\n$3\r\nSET\r\n$4\r\n\r\n\x00\xff\r\n", []string{"SET", "\r\n\x00\xff"}},
	{"empty arg", "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", []string{"ECHO", ""}},
	{"inline", "PING\r\n", []string{"PING"}},
	{"inline lf", "GET  foo \n", []string{"GET", "foo"}},
	{"empty array", "*0\r\n", nil},
}

func TestReadCommand(t *testing.T) {
	for _, tc := range commands {
		for _, mode := range []string{"whole", "byte by byte"} {
			var rd io.Reader = strings.NewReader(tc.in + tc.in)
			if mode != "whole" {
				rd = iotest.OneByteReader(rd)
			}
			r := NewReader(rd)
			for i := 0; i < 2; i++ { // pipelined: two in a row
				args, raw, err := r.ReadCommand()
				if err != nil {
					t.Fatalf("%s (%s): %v", tc.name, mode, err)
				}
				wantRaw := tc.in
				if tc.in[0] != '*' { // inline: forwarded as a multibulk
					wantRaw = string(AppendCommand(nil, args...))
				}
				if string(raw) != wantRaw {
					t.Errorf("%s (%s): raw %q, want %q", tc.name, mode, raw, wantRaw)
				}
				var got []string
				for _, a := range args {
					got = append(got, string(a))
				}
				if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
					t.Errorf("%s (%s): args %q, want %q", tc.name, mode, got, tc.want)
				}
			}
			if _, _, err := r.ReadCommand(); err != io.EOF {
				t.Errorf("%s (%s): at the end got %v, want EOF", tc.name, mode, err)
			}
		}
	}
}

func TestReadReply(t *testing.T) {
	replies := []string{"+OK\r\n", "-ERR no\r\n", ":42\r\n", "$3\r\nbar\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n",
		"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+x\r\n", "$6\r\na\r\nb\r\n\r\n"}
	all := strings.Join(replies, "")
	r := NewReader(iotest.OneByteReader(strings.NewReader(all)))
	for _, want := range replies {
		got, err := r.ReadReply()
		if err != nil || string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
}

func TestProtocolErrors(t *testing.T) {
	for _, in := range []string{
		"*x\r\n", "*2\r\n+GET\r\n", "*1\r\n$-1\r\n", "*1\r\n$99999999999\r\n",
		"*2000000\r\n", "*1\r\n$3\nGET\r\n", "*" + strings.Repeat("1", 40),
	} {
		_, _, err := NewReader(strings.NewReader(in)).ReadCommand()
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			t.Errorf("command %q: got %v, want a protocol error", in, err)
		}
	}
	for _, in := range []string{"?x\r\n", ":abc\r\n", ":+1\r\n", ":01\r\n", "$01\r\na\r\n", "*-0\r\n", "$-2\r\n", "$3\r\nabcd\r\n", "\n", strings.Repeat("*1\r\n", MaxDepth+1) + ":1\r\n"} {
		_, err := NewReader(strings.NewReader(in)).ReadReply()
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			t.Errorf("reply %q: got %v, want a protocol error", in, err)
		}
	}
	// truncated input is unexpected EOF, not a hang
	if _, _, err := NewReader(strings.NewReader("*2\r\n$3\r\nGET\r\n")).ReadCommand(); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated: got %v, want unexpected EOF", err)
	}
}

// TestDeclaredLengthAllocatesNothing: a header promising a huge bulk does
// not grow the buffer beyond what arrives.
func TestDeclaredLengthAllocatesNothing(t *testing.T) {
	in := "*1\r\n$536870912\r\n" + strings.Repeat("x", 1000)
	r := NewReader(strings.NewReader(in))
	_, _, err := r.ReadCommand()
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("got %v", err)
	}
	if len(r.buf) > minReadSize {
		t.Errorf("buffer grew to %d for %d bytes of input", len(r.buf), len(in))
	}
}

func FuzzReader(f *testing.F) {
	for _, tc := range commands {
		f.Add([]byte(tc.in))
	}
	f.Add([]byte("*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+x\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for i := 0; i < 100; i++ {
			args, raw, err := r.ReadCommand()
			if err != nil {
				break
			}
			if len(raw) == 0 && len(args) > 0 {
				t.Fatal("args without bytes")
			}
		}
		r = NewReader(bytes.NewReader(data))
		for i := 0; i < 100; i++ {
			if _, err := r.ReadReply(); err != nil {
				break
			}
		}
		if len(r.buf) > 2*len(data)+minReadSize {
			t.Fatalf("buffer %d for %d bytes", len(r.buf), len(data))
		}
	})
}

func TestSplitAndAppend(t *testing.T) {
	raw := AppendCommand(nil, []byte("MGET"), []byte("a"), []byte(""))
	if string(raw) != "*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$0\r\n\r\n" {
		t.Errorf("AppendCommand: %q", raw)
	}
	arr := []byte("*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:2\r\n")
	n, hdr, err := ArrayHeader(arr)
	if err != nil || n != 3 || hdr != 4 {
		t.Errorf("ArrayHeader: %d %d %v, want 3 4", n, hdr, err)
	}
	var els []string
	for pos := hdr; pos < len(arr); {
		n, err := ReplyLen(arr[pos:])
		if err != nil || n == 0 {
			t.Fatalf("ReplyLen at %d: %d %v", pos, n, err)
		}
		els = append(els, string(arr[pos:pos+n]))
		pos += n
	}
	if fmt.Sprintf("%q", els) != `["$1\r\na\r\n" "$-1\r\n" "*1\r\n:2\r\n"]` {
		t.Errorf("elements: %q", els)
	}
	if n, err := ReplyLen([]byte("$5\r\nab")); n != 0 || err != nil {
		t.Errorf("ReplyLen of a partial reply: %d %v, want 0 nil", n, err)
	}
	if _, _, err := ArrayHeader([]byte(":1\r\n")); err == nil {
		t.Errorf("ArrayHeader of an integer: no error")
	}
	if n, ok := Int(AppendInt(nil, -7)); !ok || n != -7 {
		t.Errorf("Int: %d %v", n, ok)
	}
	if got := string(AppendError(nil, "ERR a\r\nb")); got != "-ERR a  b\r\n" {
		t.Errorf("AppendError: %q", got)
	}
}

// TestParseIntAsString2ll: ParseInt takes exactly what Redis's string2ll
// takes.
func TestParseIntAsString2ll(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"7", 7, true}, {"-7", -7, true}, {"10", 10, true},
		{"9223372036854775807", 9223372036854775807, true}, {"-9223372036854775808", -9223372036854775808, true},
		{"+7", 0, false}, {"-", 0, false}, {"+", 0, false}, {"", 0, false}, {"12a", 0, false}, {" 1", 0, false},
		{"1 ", 0, false}, {"007", 0, false}, {"00", 0, false}, {"-0", 0, false}, {"-07", 0, false},
		{"9223372036854775808", 0, false}, {"-9223372036854775809", 0, false}, {"18446744073709551616", 0, false},
		{"99999999999999999999", 0, false}, {"100000000000000000000", 0, false}, {"1_000", 0, false},
		{"0x10", 0, false}, {"١", 0, false}, {"1\x00", 0, false},
	} {
		got, ok := ParseInt([]byte(tc.in))
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseInt(%q) = %d %v, want %d %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
