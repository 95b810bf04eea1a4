package redisproxy

import (
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/resp"
	"github.com/attache-proxy/attache/internal/testenv"
)

// TestBadClientsCannotBreakSharedConnection: commands that Redis would
// refuse (and then close the connection that carried them) are refused by
// attache itself with Redis's error text, to that client only, while an
// innocent client pipelines GETs over the same server connection without
// a single failure. Commands Redis takes in a non-canonical form reach
// the shard re-encoded and are answered.
func TestBadClientsCannotBreakSharedConnection(t *testing.T) {
	forPaths(t, testBadClientsCannotBreakSharedConnection)
}

func testBadClientsCannotBreakSharedConnection(t *testing.T, via func(*Options)) {
	shard := testenv.Redis(t)
	if _, err := testenv.RedisCommand(shard, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	p := pool(t, []string{shard}, via, func(o *Options) { o.ServerConnections = 1 })
	addr := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})

	bad := []struct{ name, in, want string }{
		{"plus sign count", "*+2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"leading zero count", "*02\r\n$3\r\nGET\r\n$1\r\nk\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"leading zero length", "*2\r\n$03\r\nGET\r\n$1\r\nk\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"plus sign length", "*2\r\n$3\r\nGET\r\n$+1\r\nk\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"minus zero length", "*2\r\n$3\r\nGET\r\n$-0\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"unbalanced quote", "GET \"k\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
		{"text after a closing quote", "GET 'k'x\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
		{"NUL in an inline command", "GET k\x00\r\n", "-ERR Protocol error: too big inline request\r\n"},
		{"CR and another byte", "*2\rx$3\ryGET\r\n$1\r\nkab", "$1\r\nv\r\n"},
		{"quoted inline", "GET \"\\x6b\"\r\n", "$1\r\nv\r\n"},
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	failures, gets := 0, 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		failures, gets = innocentGets(t, addr, done)
	}()
	// Consecutive clients land on every engine, so some share the
	// innocent client's server connection.
	for _, tc := range bad {
		for range runtime.GOMAXPROCS(0) + 1 {
			if got := badClient(t, addr, tc.in); got != tc.want {
				t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
			}
		}
	}
	close(done)
	wg.Wait()
	if failures != 0 || gets == 0 {
		t.Errorf("the innocent client: got %d failed GETs of %d, want 0 of more than 0", failures, gets)
	}
}

// innocentGets pipelines GETs of k in rounds of 50 until done is closed
// (and at least 20 rounds are done); it returns the replies that were not
// "v", and the GETs sent.
func innocentGets(t *testing.T, addr string, done <-chan struct{}) (failures, gets int) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return 1, 0
	}
	defer c.Close()
	rd := resp.NewReader(c)
	batch := []byte(strings.Repeat("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", 50))
	want := "$1\r\nv\r\n"
	for round := 0; round < 100000; round++ {
		select {
		case <-done:
			if round >= 20 {
				return failures, gets
			}
		default:
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(batch); err != nil {
			t.Errorf("innocent client: %v", err)
			return failures + 1, gets
		}
		for range 50 {
			gets++
			reply, err := rd.ReadReply()
			if err != nil {
				t.Errorf("innocent client: %v", err)
				return failures + 1, gets
			}
			if string(reply) != want {
				failures++
				if failures < 5 {
					t.Logf("innocent client: got %q, want %q", reply, want)
				}
			}
		}
	}
	return failures, gets
}

// badClient sends in on a new connection and returns all it gets back
// until the connection is closed (or after one reply, for a command that
// is answered).
func badClient(t *testing.T, addr, in string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(in))
	r := resp.NewReader(c)
	var all []byte
	for {
		reply, err := r.ReadReply()
		if err != nil {
			if err != io.EOF {
				all = append(all, "<"+err.Error()+">"...)
			}
			return string(all)
		}
		all = append(all, reply...)
		if reply[0] != '-' {
			return string(all)
		}
	}
}
