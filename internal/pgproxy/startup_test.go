package pgproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/upstream"
)

// startupPacket builds a length-prefixed startup packet.
func startupPacket(code uint32, body string) []byte {
	b := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint32(b, uint32(8+len(body)))
	binary.BigEndian.PutUint32(b[4:], code)
	return append(b, body...)
}

// runStartup feeds in to a Proxy without servers and returns what it wrote
// back before closing the connection.
func runStartup(t testing.TB, in []byte) []byte {
	p := New(Config{Users: map[string]string{"u": "pw"}, PoolSize: 1,
		Dial: func(context.Context, *upstream.Endpoint) (net.Conn, string, error) { return nil, "", io.EOF }})
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if srv, err := ln.Accept(); err == nil {
			p.ServeConn(context.Background(), srv)
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SetDeadline(time.Now().Add(5 * time.Second))
	client.Write(in)
	client.(*net.TCPConn).CloseWrite() // the proxy reads EOF after in
	out, _ := io.ReadAll(client)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("ServeConn still running for input %q", in)
	}
	return out
}

func TestMalformedStartup(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   []byte
		want string // in the ErrorResponse; "" for a plain close
	}{
		{"short length", []byte{0, 0, 0, 3, 0, 0, 0, 0}, "invalid startup packet"},
		{"huge length", []byte{0x7f, 0, 0, 0, 0, 3, 0, 0}, "invalid startup packet"},
		{"unknown code", startupPacket(12345, ""), "unsupported frontend protocol 0.12345"},
		{"terminator not last", startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u\x00\x00x"), "invalid startup packet layout"},
		{"name without value", startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u\x00database\x00"), "invalid startup packet layout"},
		{"one byte", startupPacket(pgproto3.ProtocolVersionNumber, "u"), "invalid startup packet layout"},
		{"over 10000 bytes", startupPacket(pgproto3.ProtocolVersionNumber, "user\x00"+strings.Repeat("u", maxStartupPacket)+"\x00\x00"), "invalid length of startup packet"},
		{"SSLRequest twice", append(startupPacket(80877103, ""), startupPacket(80877103, "")...), "request for encryption made twice"},
		{"GSSENCRequest twice", append(startupPacket(80877104, ""), startupPacket(80877104, "")...), "request for encryption made twice"},
		{"cancel request too short", startupPacket(80877102, "\x00\x00\x00\x01"), "invalid length of cancel request"},
		{"no terminator", startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u"), "invalid startup packet"},
		{"no user", startupPacket(pgproto3.ProtocolVersionNumber, "database\x00d\x00\x00"), "no PostgreSQL user name"},
		{"unsupported parameter", startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u\x00replication\x00true\x00\x00"), "unsupported startup parameter: replication"},
		{"truncated", startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u\x00\x00")[:10], ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := runStartup(t, tc.in)
			if tc.want == "" {
				return
			}
			out = bytes.TrimLeft(out, "N") // the answers to encryption requests
			if len(out) == 0 || out[0] != 'E' || !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "08P01") && !strings.Contains(string(out), "28000") && !strings.Contains(string(out), "0A000") {
				t.Errorf("got %q, want an ErrorResponse containing %q", out, tc.want)
			}
		})
	}
}

func TestSSLAndGSSRefused(t *testing.T) {
	t.Parallel()
	// No client TLS configured: both requests get 'N', then the startup
	// goes on in plain text (to a SCRAM challenge).
	in := append(startupPacket(80877103, ""), startupPacket(80877104, "")...)
	in = append(in, startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u\x00\x00")...)
	out := runStartup(t, in)
	if len(out) < 3 || string(out[:2]) != "NN" || out[2] != 'R' {
		t.Errorf("got %q, want N, N, then an authentication request", out)
	}
}

func FuzzStartup(f *testing.F) {
	f.Add(startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u\x00database\x00d\x00\x00"))
	f.Add(startupPacket(80877103, ""))
	f.Add(startupPacket(80877102, "\x00\x00\x00\x01\x00\x00\x00\x02"))
	f.Add([]byte{0, 0, 0, 8})
	f.Add(append(startupPacket(80877104, ""), startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u\x00\x00")...))
	f.Add([]byte("\x00\x00\x00\x10\x00\x03000000\x000\x00\x00")) // protocol 3.12336: NegotiateProtocolVersion
	f.Fuzz(func(t *testing.T, in []byte) {
		out := runStartup(t, in)
		// Error, SSL/GSS refusal, an authentication request, or
		// NegotiateProtocolVersion for a newer 3.x or a _pq_ option.
		if len(out) > 0 && !strings.ContainsRune("ENRv", rune(out[0])) {
			t.Errorf("input %q: reply starts with %q", in, out[0])
		}
	})
}
