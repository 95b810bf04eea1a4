package resp

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// chunks is an io.Reader that returns one chunk per Read.
type chunks struct{ parts [][]byte }

func (c *chunks) Read(b []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(b, c.parts[0])
	if c.parts[0] = c.parts[0][n:]; len(c.parts[0]) == 0 {
		c.parts = c.parts[1:]
	}
	return n, nil
}

// TestTrickledCommandIsParsedOnce: a command of 40,000 arguments that
// arrives one argument per read is parsed in steps linear in its size
// (each length line and bulk once), not from its first byte on every read.
func TestTrickledCommandIsParsedOnce(t *testing.T) {
	const n = 40000
	src := &chunks{parts: [][]byte{[]byte(fmt.Sprintf("*%d\r\n", n))}}
	for i := 0; i < n; i++ {
		src.parts = append(src.parts, []byte("$5\r\nabcde\r\n"))
	}
	r := NewReader(src)
	args, _, err := r.ReadCommand()
	if err != nil || len(args) != n {
		t.Fatalf("got %d args, %v; want %d", len(args), err, n)
	}
	if r.steps > 3*n {
		t.Errorf("got %d parse steps for %d arguments, want at most %d", r.steps, n, 3*n)
	}
}

// TestBufferShrinksAfterLargeCommand: the buffer grown for a large
// command is given back once the command has been read.
func TestBufferShrinksAfterLargeCommand(t *testing.T) {
	big := string(AppendCommand(nil, []byte("SET"), []byte("k"), bytes.Repeat([]byte("x"), 1<<20)))
	for _, tc := range []struct {
		name, in string
		read     func(r *Reader) error
	}{
		{"command", big + "*1\r\n$4\r\nPING\r\n", func(r *Reader) error { _, _, err := r.ReadCommand(); return err }},
		{"reply", "$1048576\r\n" + strings.Repeat("x", 1<<20) + "\r\n+OK\r\n", func(r *Reader) error { _, err := r.ReadReply(); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tc.in))
			if err := tc.read(r); err != nil {
				t.Fatal(err)
			}
			if len(r.buf) < 1<<20 {
				t.Fatalf("buffer %d after a 1 MiB message, want it grown", len(r.buf))
			}
			if err := tc.read(r); err != nil {
				t.Fatal(err)
			}
			if len(r.buf) > maxKeep {
				t.Errorf("got a buffer of %d after the large message, want at most %d", len(r.buf), maxKeep)
			}
		})
	}
	t.Run("many arguments", func(t *testing.T) {
		in := "*100000\r\n" + strings.Repeat("$1\r\nx\r\n", 100000) + "*1\r\n$4\r\nPING\r\n"
		r := NewReader(strings.NewReader(in))
		for range 2 {
			if _, _, err := r.ReadCommand(); err != nil {
				t.Fatal(err)
			}
		}
		if cap(r.args) > maxKeepArgs || cap(r.cmd.offs) > 2*maxKeepArgs {
			t.Errorf("got room for %d args and %d offsets after the large command, want at most %d and %d",
				cap(r.args), cap(r.cmd.offs), maxKeepArgs, 2*maxKeepArgs)
		}
	})
}

// TestQueryBufferLimit: a command larger than the query buffer limit ends
// the read with ErrQueryBuffer, and the buffer never exceeds the limit.
func TestQueryBufferLimit(t *testing.T) {
	in := AppendCommand(nil, []byte("SET"), []byte("k"), bytes.Repeat([]byte("x"), 200<<10))
	r := NewReader(bytes.NewReader(in))
	r.maxQuery = 64 << 10
	if _, _, err := r.ReadCommand(); err != ErrQueryBuffer {
		t.Errorf("got %v, want ErrQueryBuffer", err)
	}
	if len(r.buf) > 64<<10 {
		t.Errorf("got a buffer of %d, want at most %d", len(r.buf), 64<<10)
	}
}

// TestLargeBulkBufferFitsIt: the buffer of a large bulk ends at its size,
// not doubled past it.
func TestLargeBulkBufferFitsIt(t *testing.T) {
	in := AppendCommand(nil, []byte("SET"), []byte("k"), bytes.Repeat([]byte("x"), 3<<20))
	r := NewReader(bytes.NewReader(in))
	if _, _, err := r.ReadCommand(); err != nil {
		t.Fatal(err)
	}
	if len(r.buf) > len(in)+minReadSize {
		t.Errorf("got a buffer of %d for a command of %d, want at most %d", len(r.buf), len(in), len(in)+minReadSize)
	}
}

// TestTrickledReplyIsParsedOnce: an array reply of 40,000 elements, nested
// ones among them, arriving one element per read is parsed in steps linear
// in its size, and whole.
func TestTrickledReplyIsParsedOnce(t *testing.T) {
	const n = 40000
	src := &chunks{parts: [][]byte{[]byte(fmt.Sprintf("*%d\r\n", n))}}
	var all []byte
	for i := 0; i < n; i++ {
		el := []byte("$5\r\nabcde\r\n")
		if i%100 == 0 {
			el = []byte("*2\r\n:1\r\n*-1\r\n")
		}
		src.parts = append(src.parts, el)
		all = append(all, el...)
	}
	want := append([]byte(fmt.Sprintf("*%d\r\n", n)), all...)
	r := NewReader(src)
	got, err := r.ReadReply()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, %v; want the %d of the reply", len(got), err, len(want))
	}
	if r.steps > 3*n {
		t.Errorf("got %d parse steps for %d elements, want at most %d", r.steps, n, 3*n)
	}
}

// TestDeclaredLengthOnlyGrowsWithBytes: a bulk declared at 512 MB whose
// bytes trickle in grows the buffer with the bytes received, not to the
// declared size.
func TestDeclaredLengthOnlyGrowsWithBytes(t *testing.T) {
	in := "*1\r\n$536870912\r\n" + strings.Repeat("x", 100<<10)
	r := NewReader(strings.NewReader(in))
	if _, _, err := r.ReadCommand(); err != io.ErrUnexpectedEOF {
		t.Fatalf("got %v, want unexpected EOF", err)
	}
	if len(r.buf) > 2*len(in) {
		t.Errorf("got a buffer of %d for %d bytes received, want at most %d", len(r.buf), len(in), 2*len(in))
	}
}

// TestResetGivesBackLargeBuffers: a Reader reused for another connection
// keeps no buffer grown for the last one.
func TestResetGivesBackLargeBuffers(t *testing.T) {
	in := "*100000\r\n" + strings.Repeat("$1\r\nx\r\n", 100000)
	r := NewReader(strings.NewReader(in))
	if _, _, err := r.ReadCommand(); err != nil {
		t.Fatal(err)
	}
	r.Reset(strings.NewReader(""))
	if len(r.buf) > maxKeep || cap(r.args) > maxKeepArgs || cap(r.cmd.offs) > 2*maxKeepArgs {
		t.Errorf("after Reset: got a buffer of %d and room for %d args, %d offsets; want at most %d, %d, %d",
			len(r.buf), cap(r.args), cap(r.cmd.offs), maxKeep, maxKeepArgs, 2*maxKeepArgs)
	}
}

// TestArgumentsSurviveBufferMoves: the arguments of a command parsed
// before the buffer is compacted or grown (the command still arriving)
// are those of the command.
func TestArgumentsSurviveBufferMoves(t *testing.T) {
	var want [][]byte
	for i := range 3000 {
		want = append(want, []byte(fmt.Sprintf("arg-%d-%s", i, strings.Repeat("y", i%37))))
	}
	first := AppendCommand(nil, []byte("PING"))
	in := append(append(first, AppendCommand(nil, want...)...), first...)
	for _, size := range []int{1, 7, 100, 4000, 5000} {
		r := NewReader(&chunks{parts: split(in, size)})
		for i, w := range [][][]byte{{[]byte("PING")}, want, {[]byte("PING")}} {
			args, _, err := r.ReadCommand()
			if err != nil || !equalArgs(args, w) {
				t.Fatalf("chunks of %d, command %d: got %d args, %v; want the %d sent", size, i, len(args), err, len(w))
			}
		}
	}
}

// TestLargeRepliesAreRead: a reply of more elements than a command may
// have, or larger than the query buffer limit, is read: the client asked
// for it, and failing it would fail every request on the shared server
// connection it came on.
func TestLargeRepliesAreRead(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		maxQuery    int64
	}{
		{"2M elements", "*2000000\r\n" + strings.Repeat(":1\r\n", 2000000), MaxQuery},
		{"over the query buffer limit", "$204800\r\n" + strings.Repeat("x", 200<<10) + "\r\n", 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tc.reply + "+OK\r\n"))
			r.maxQuery = tc.maxQuery
			got, err := r.ReadReply()
			if err != nil || len(got) != len(tc.reply) {
				t.Fatalf("got %d bytes, %v; want the %d of the reply", len(got), err, len(tc.reply))
			}
			if got, err := r.ReadReply(); err != nil || string(got) != "+OK\r\n" {
				t.Errorf("the reply after: got %q, %v; want +OK", got, err)
			}
		})
	}
}
