package resp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

// redisCases are Redis's decisions on client input (processMultibulkBuffer,
// processInlineBuffer, string2ll, sdssplitargs): the commands it reads,
// then the protocol error it answers with before closing ("" when it
// waits for more). TestRedisCases checks the table against a real
// redis-server.
var redisCases = []struct {
	name, in string
	want     []string // commands, args joined by "|"
	err      string   // the error after them; "": the input ends cleanly
	unauth   bool     // the client has not authenticated (requirepass set)
	stricter bool     // attache refuses what Redis would take (or wait for)
}{
	{name: "multibulk", in: "*2\r\n$4\r\nECHO\r\n$3\r\nfoo\r\n", want: []string{"ECHO|foo"}},
	{name: "binary arg", in: "*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\x00\xff\r\n", want: []string{"ECHO|\r\n\x00\xff"}},
	{name: "empty arg", in: "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", want: []string{"ECHO|"}},
	{name: "empty array", in: "*0\r\n*1\r\n$4\r\nPING\r\n", want: []string{"", "PING"}},
	{name: "negative array is empty", in: "*-5\r\n*-1\r\n", want: []string{"", ""}},
	{name: "CR and any byte end a line", in: "*1\rx$4\ryPING\r\n", want: []string{"PING"}},
	{name: "any two bytes end a bulk", in: "*1\r\n$4\r\nPINGab*1\r\n$4\r\nPING\r\n", want: []string{"PING", "PING"}},
	{name: "largest length line", in: "*1\r\n$536870912\r\n", err: ""},
	{name: "inline", in: "PING\r\n", want: []string{"PING"}},
	{name: "inline LF and spaces", in: "ECHO  foo \n", want: []string{"ECHO|foo"}},
	{name: "inline empty lines", in: "\r\n  \t\n\n", want: []string{"", "", ""}},
	{name: "inline double quotes", in: "ECHO \"a b\"\r\n", want: []string{"ECHO|a b"}},
	{name: "inline escapes", in: "ECHO \"\\x41\\x4a\\n\\r\\t\\b\\a\\\"\\q\\\\\"\r\n", want: []string{"ECHO|AJ\n\r\t\b\a\"q\\"}},
	{name: "inline bad hex is a letter", in: "ECHO \"\\xZ1\"\r\n", want: []string{"ECHO|xZ1"}},
	{name: "inline single quotes", in: "ECHO 'it\\'s \\n'\r\n", want: []string{"ECHO|it's \\n"}},
	{name: "inline quote inside a word", in: "ECHO a\"b c\"\r\n", want: []string{"ECHO|ab c"}},
	{name: "inline empty quotes", in: "ECHO \"\" ''\r\n", want: []string{"ECHO||"}},
	{name: "inline unquoted backslash", in: "ECHO \\x41\r\n", want: []string{"ECHO|\\x41"}},
	{name: "inline vertical tab inside a word", in: "\vECHO a\vb\r\n", want: []string{"ECHO|a\vb"}},
	{name: "inline quote then vertical tab", in: "ECHO \"a\"\vb\r\n", want: []string{"ECHO|a|b"}},
	{name: "inline CR inside", in: "ECHO a\rb\r\r\n", want: []string{"ECHO|a|b"}},
	{name: "inline high bytes", in: "ECHO \xff\xa0\r\n", want: []string{"ECHO|\xff\xa0"}},

	{name: "plus sign count", in: "*+2\r\n$4\r\nECHO\r\n$1\r\na\r\n", err: "invalid multibulk length"},
	{name: "leading zero count", in: "*02\r\n$4\r\nECHO\r\n$1\r\na\r\n", err: "invalid multibulk length"},
	{name: "minus zero count", in: "*-0\r\n", err: "invalid multibulk length"},
	{name: "space in count", in: "* 1\r\n", err: "invalid multibulk length"},
	{name: "space after count", in: "*1 \r\n", err: "invalid multibulk length"},
	{name: "empty count", in: "*\r\n", err: "invalid multibulk length"},
	{name: "count LF without CR", in: "*1\n$4\r\nPING\r\n", err: "invalid multibulk length"},
	{name: "count of 21 digits", in: "*111111111111111111111\r\n", err: "invalid multibulk length"},
	{name: "count overflows", in: "*9223372036854775808\r\n", err: "invalid multibulk length"},
	{name: "count above attache's limit", in: "*1048577\r\n", err: "invalid multibulk length", stricter: true},
	{name: "NUL in count", in: "*1\x00\r\n", err: "too big mbulk count string"},
	{name: "plus sign length", in: "*2\r\n$4\r\nECHO\r\n$+1\r\na\r\n", err: "invalid bulk length"},
	{name: "leading zero length", in: "*2\r\n$04\r\nECHO\r\n$1\r\na\r\n", err: "invalid bulk length"},
	{name: "minus zero length", in: "*1\r\n$-0\r\n", err: "invalid bulk length"},
	{name: "null bulk", in: "*1\r\n$-1\r\n", err: "invalid bulk length"},
	{name: "length above proto-max-bulk-len", in: "*1\r\n$536870913\r\n", err: "invalid bulk length"},
	{name: "length LF without CR", in: "*1\r\n$4\nPING\r\n", err: "invalid bulk length"},
	{name: "not a bulk", in: "*1\r\n+PING\r\n", err: "expected '$', got '+'"},
	{name: "empty line for a bulk", in: "*1\r\n\r\n", err: "expected '$', got '\r'"},
	{name: "NUL in length", in: "*1\r\n$4\x00\r\n", err: "too big bulk count string"},
	{name: "after a good command", in: "*1\r\n$4\r\nPING\r\n*1\r\n$01\r\n", want: []string{"PING"}, err: "invalid bulk length"},
	{name: "inline unbalanced double quote", in: "ECHO \"a\r\n", err: "unbalanced quotes in request"},
	{name: "inline unbalanced single quote", in: "ECHO 'a\r\n", err: "unbalanced quotes in request"},
	{name: "inline escaped closing quote", in: "ECHO \"a\\\"\r\n", err: "unbalanced quotes in request"},
	{name: "inline backslash at the end", in: "ECHO \"a\\\r\n", err: "unbalanced quotes in request"},
	{name: "inline text after a closing quote", in: "ECHO \"a\"b\r\n", err: "unbalanced quotes in request"},
	{name: "inline text after a closing single quote", in: "ECHO 'a'b\r\n", err: "unbalanced quotes in request"},
	{name: "inline too big", in: strings.Repeat("a", MaxInline+1), err: "too big inline request"},

	{name: "unauthenticated 10 args", in: "*10\r\n", unauth: true},
	{name: "unauthenticated 11 args", in: "*11\r\n", err: "unauthenticated multibulk length", unauth: true},
	{name: "unauthenticated 16384 bytes", in: "*1\r\n$16384\r\n", unauth: true},
	{name: "unauthenticated 16385 bytes", in: "*1\r\n$16385\r\n", err: "unauthenticated bulk length", unauth: true},
	{name: "unauthenticated count over INT_MAX", in: "*2147483648\r\n", err: "invalid multibulk length", unauth: true},
	{name: "unauthenticated count over attache's limit", in: "*1070000\r\n", err: "unauthenticated multibulk length", unauth: true},
	{name: "unauthenticated bad length first", in: "*1\r\n$016385\r\n", err: "invalid bulk length", unauth: true},
}

// readAll reads commands until an error; it returns them (args joined by
// "|") and the protocol error's text ("" at the end of the input).
func readAll(r *Reader) (cmds []string, perr string, err error) {
	all, perr, err := readCmds(r)
	for _, args := range all {
		cmds = append(cmds, string(bytes.Join(args, []byte("|"))))
	}
	return cmds, perr, err
}

// readCmds reads commands until an error, checking that each one's raw
// bytes are the canonical multibulk of its args; it returns copies of
// them, and the protocol error's text ("" at the end of the input).
func readCmds(r *Reader) (cmds [][][]byte, perr string, err error) {
	for {
		args, raw, err := r.ReadCommand()
		var pe *ProtocolError
		switch {
		case errors.As(err, &pe):
			return cmds, pe.Msg, nil
		case err == io.EOF, err == io.ErrUnexpectedEOF:
			return cmds, "", nil
		case err != nil:
			return cmds, "", err
		}
		if len(args) > 0 {
			back, _, err := NewReader(bytes.NewReader(raw)).ReadCommand()
			if err != nil || !equalArgs(back, args) || !bytes.Equal(raw, AppendCommand(nil, args...)) {
				return cmds, "", errors.New("raw is not the canonical multibulk of args: " + string(raw))
			}
		}
		cp := [][]byte{}
		for _, a := range args {
			cp = append(cp, bytes.Clone(a))
		}
		cmds = append(cmds, cp)
	}
}

func equalArgs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestCommandsAsRedis: the Reader takes and splits commands as Redis does
// and refuses what Redis refuses, with its error text, whether the input
// comes whole or byte by byte.
func TestCommandsAsRedis(t *testing.T) {
	for _, tc := range redisCases {
		for _, mode := range []string{"whole", "byte by byte"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				var rd io.Reader = strings.NewReader(tc.in)
				if mode != "whole" {
					rd = iotest.OneByteReader(rd)
				}
				r := NewReader(rd)
				r.RequireAuth(tc.unauth)
				cmds, perr, err := readAll(r)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Join(cmds, "\n") != strings.Join(tc.want, "\n") || len(cmds) != len(tc.want) {
					t.Errorf("got commands %q, want %q", cmds, tc.want)
				}
				if perr != tc.err {
					t.Errorf("got error %q, want %q", perr, tc.err)
				}
			})
		}
	}
}

// TestRedisCases checks the table against a real redis-server: each input
// on its own connection, then a PING; a refused input gets "-ERR Protocol
// error: ..." and the connection is closed.
func TestRedisCases(t *testing.T) {
	open := testenv.Redis(t)
	locked := redisWithPassword(t)
	for _, tc := range redisCases {
		if tc.stricter || strings.Contains(tc.err, "too big") || tc.err == "" && len(tc.want) == 0 {
			continue // Redis takes it, or waits for more
		}
		t.Run(tc.name, func(t *testing.T) {
			addr := open
			if tc.unauth {
				addr = locked
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte(tc.in + "*1\r\n$4\r\nPING\r\n"))
			var got bytes.Buffer
			rd := bufio.NewReader(c)
			for {
				l, err := rd.ReadString('\n')
				got.WriteString(l)
				if err != nil || tc.err == "" && strings.HasSuffix(got.String(), "+PONG\r\n") {
					break
				}
			}
			if tc.err == "" {
				if strings.Contains(got.String(), "Protocol error") || !strings.HasSuffix(got.String(), "+PONG\r\n") {
					t.Errorf("got %q, want replies then +PONG", got.String())
				}
				return
			}
			want := string(AppendError(nil, "ERR Protocol error: "+tc.err))
			if !strings.HasSuffix(got.String(), want) {
				t.Errorf("got %q, want it to end with %q and the connection closed", got.String(), want)
			}
		})
	}
}

// redisWithPassword starts a redis-server with requirepass set.
func redisWithPassword(t *testing.T) string {
	bin := testenv.Binary(t, "redis-server", "redis-server")
	addr := testenv.FreePort(t)
	_, port, _ := net.SplitHostPort(addr)
	testenv.Start(t, exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--logfile", "", "--requirepass", "s3cret"))
	testenv.WaitTCP(t, addr, 10*time.Second)
	return addr
}
