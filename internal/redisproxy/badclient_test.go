package redisproxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
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
		{"CR and another byte", "*2\rx$3\ryGET\r\n$1\r\nkabQUIT\r\n", "$1\r\nv\r\n+OK\r\n"},
		{"quoted inline", "GET \"\\x6b\"\r\nQUIT\r\n", "$1\r\nv\r\n+OK\r\n"},
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
// until the connection is closed (a reset, when the server closed with
// input unread, counts as closed).
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
			if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
				all = append(all, "<"+err.Error()+">"...)
			}
			return string(all)
		}
		all = append(all, reply...)
	}
}

// TestUnauthenticatedLimits: before AUTH on a listener with a password, a
// command of more than 10 arguments or a bulk of more than 16384 bytes
// gets Redis's error and the connection is closed, before the bulk is
// buffered; after AUTH (in the same write) the limits are lifted.
func TestUnauthenticatedLimits(t *testing.T) { forPaths(t, testUnauthenticatedLimits) }

func testUnauthenticatedLimits(t *testing.T, via func(*Options)) {
	shard := testenv.Redis(t)
	addr := serve(t, &Handler{Pool: pool(t, []string{shard}, via), Password: "s3cret", Log: slog.New(slog.DiscardHandler)})
	big := strings.Repeat("x", 100000)
	set := string(resp.AppendCommand(nil, []byte("SET"), []byte("k"), []byte(big)))
	for _, tc := range []struct{ name, in, want string }{
		{"huge bulk", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$150000000\r\n" + big, "-ERR Protocol error: unauthenticated bulk length\r\n"},
		{"bulk over 16384", set, "-ERR Protocol error: unauthenticated bulk length\r\n"},
		{"11 arguments", "*11\r\n", "-ERR Protocol error: unauthenticated multibulk length\r\n"},
		{"after a failed AUTH", "*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n" + set,
			"-WRONGPASS invalid username-password pair or user is disabled.\r\n-ERR Protocol error: unauthenticated bulk length\r\n"},
		{"after AUTH", "*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n" + set + "*2\r\n$6\r\nSTRLEN\r\n$1\r\nk\r\n*1\r\n$4\r\nQUIT\r\n",
			"+OK\r\n+OK\r\n:100000\r\n+OK\r\n"},
	} {
		if got := badClient(t, addr, tc.in); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestLargeReplyKeepsSharedConnection: a reply of more than 1M elements
// (LRANGE of a long list) reaches the client that asked for it, and the
// server connection it shares with an innocent client pipelining GETs is
// not failed.
func TestLargeReplyKeepsSharedConnection(t *testing.T) {
	forPaths(t, testLargeReplyKeepsSharedConnection)
}

func testLargeReplyKeepsSharedConnection(t *testing.T, via func(*Options)) {
	shard := testenv.Redis(t)
	const n = 1100000
	if _, err := testenv.RedisCommand(shard, "EVAL", "local t = {} for i = 1, 1000 do t[i] = 'x' end for i = 1, ARGV[1] / 1000 do redis.call('RPUSH', KEYS[1], unpack(t)) end", "1", "big", fmt.Sprint(n)); err != nil {
		t.Fatal(err)
	}
	testenv.RedisCommand(shard, "SET", "k", "v")
	p := pool(t, []string{shard}, via, func(o *Options) { o.ServerConnections = 1; o.Timeout = 30 * time.Second })
	addr := serve(t, &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)})

	var wg sync.WaitGroup
	done := make(chan struct{})
	failures, gets := 0, 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		failures, gets = innocentGets(t, addr, done)
	}()
	for range runtime.GOMAXPROCS(0) + 1 { // one of them shares the innocent client's server connection
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(60 * time.Second))
		c.Write([]byte("*4\r\n$6\r\nLRANGE\r\n$3\r\nbig\r\n$1\r\n0\r\n$2\r\n-1\r\n"))
		reply, err := resp.NewReader(c).ReadReply()
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		head := fmt.Sprintf("*%d\r\n", n)
		if !strings.HasPrefix(string(reply), head) || len(reply) != len(head)+n*len("$1\r\nx\r\n") {
			t.Fatalf("LRANGE: got %d bytes (%q...), want %d elements", len(reply), reply[:min(len(reply), 40)], n)
		}
	}
	close(done)
	wg.Wait()
	if failures != 0 || gets == 0 {
		t.Errorf("the innocent client: got %d failed GETs of %d, want 0 of more than 0", failures, gets)
	}
}
