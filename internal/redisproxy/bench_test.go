package redisproxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/attache-proxy/attache/internal/testenv"
)

// BenchmarkPipeline: one client sends GET or a 10-key MGET in pipelines of
// depth 1 and 16 through the proxy over three real shards; per command.
// Compare the paths with -bench, and allocations with -benchmem.
func BenchmarkPipeline(b *testing.B) {
	shards := []string{testenv.Redis(b), testenv.Redis(b), testenv.Redis(b)}
	for _, path := range []string{"engine", "goroutines"} {
		p := pool(b, shards, func(o *Options) {
			if path == "goroutines" {
				portable(o)
			}
		})
		addr := testenv.Serve(b, nil, func(c net.Conn) { (&Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}).ServeConn(b.Context(), c) })
		for _, cmd := range []string{"GET", "MGET"} {
			for _, depth := range []int{1, 16} {
				b.Run(fmt.Sprintf("%s/%s/P%d", path, cmd, depth), func(b *testing.B) {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					var one string
					if cmd == "GET" {
						one = "*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n"
					} else {
						one = "*11\r\n$4\r\nMGET\r\n"
						for k := 0; k < 10; k++ {
							one += fmt.Sprintf("$3\r\nk:%d\r\n", k)
						}
					}
					batch := []byte(strings.Repeat(one, depth))
					reply := "$-1\r\n"
					if cmd == "MGET" {
						reply = "*10\r\n" + strings.Repeat("$-1\r\n", 10)
					}
					want := make([]byte, len(reply)*depth)
					rd := bufio.NewReader(c)
					b.ResetTimer()
					for i := 0; i < b.N; i += depth {
						c.Write(batch)
						if _, err := io.ReadFull(rd, want); err != nil {
							b.Fatal(err)
						}
					}
					if string(want[:len(reply)]) != reply {
						b.Fatalf("got %q", want[:len(reply)])
					}
				})
			}
		}
	}
}
