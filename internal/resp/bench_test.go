package resp

import (
	"fmt"
	"strings"
	"testing"
)

// loop is an io.Reader that returns data over and over, up to n bytes
// per Read.
type loop struct {
	data []byte
	off  int
}

func (l *loop) Read(b []byte) (int, error) {
	n := copy(b, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

// BenchmarkReadCommand: commands read from a pipelining client, per
// command; -benchmem shows the hot path allocates nothing.
func BenchmarkReadCommand(b *testing.B) {
	mget := "*11\r\n$4\r\nMGET\r\n"
	for k := 0; k < 10; k++ {
		mget += fmt.Sprintf("$3\r\nk:%d\r\n", k)
	}
	for _, bc := range []struct{ name, cmd string }{
		{"GET", "*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n"},
		{"SET 1KiB", string(AppendCommand(nil, []byte("SET"), []byte("key:1"), []byte(strings.Repeat("v", 1024))))},
		{"MGET 10", mget},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := NewReader(&loop{data: []byte(strings.Repeat(bc.cmd, 64))})
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.cmd)))
			for b.Loop() {
				if _, _, err := r.ReadCommand(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadReply: replies read from a shard connection, per reply.
func BenchmarkReadReply(b *testing.B) {
	for _, bc := range []struct{ name, reply string }{
		{"bulk", "$5\r\nvalue\r\n"},
		{"MGET 10", "*10\r\n" + strings.Repeat("$5\r\nvalue\r\n", 9) + "$-1\r\n"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := NewReader(&loop{data: []byte(strings.Repeat(bc.reply, 64))})
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.reply)))
			for b.Loop() {
				if _, err := r.ReadReply(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
