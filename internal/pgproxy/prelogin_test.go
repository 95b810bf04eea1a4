package pgproxy

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/upstream"
)

// serveNoServers serves a Proxy without servers (every dial fails) on a
// free port, for exchanges that end before a server is needed.
func serveNoServers(t *testing.T, users map[string]string) string {
	t.Helper()
	p := New(Config{Users: users, PoolSize: 1,
		Dial: func(context.Context, *upstream.Endpoint) (net.Conn, string, error) { return nil, "", io.EOF }})
	t.Cleanup(p.Close)
	return testenv.Serve(t, nil, func(c net.Conn) { p.ServeConn(context.Background(), c) })
}

// message frames a client message: type, length, body.
func message(typ byte, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

// header is a message header claiming length n, with no body.
func header(typ byte, n uint32) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], n)
	return b
}

// receiveUntil reads server messages until one that fn says ends the
// exchange, an error or 10 s, and returns them all. (Each message type
// comes at most once in these exchanges: the Frontend's reuse of its
// messages does not matter.)
func receiveUntil(t *testing.T, conn net.Conn, fn func(pgproto3.BackendMessage) bool) ([]pgproto3.BackendMessage, error) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	var got []pgproto3.BackendMessage
	for {
		msg, err := fe.Receive()
		if err != nil {
			return got, err
		}
		got = append(got, msg)
		if fn(msg) {
			return got, nil
		}
	}
}

func isError(m pgproto3.BackendMessage) bool {
	_, ok := m.(*pgproto3.ErrorResponse)
	return ok
}

// TestAuthMessageLimits: a client that is not logged in cannot make
// attache reserve more than PostgreSQL's own limits for its authentication
// messages: a longer length is refused at once with 08P01, where attache
// used to allocate the announced length (up to 1 GiB) and wait for it.
func TestAuthMessageLimits(t *testing.T) {
	t.Parallel()
	const md5Secret = "md5" + "0123456789abcdef0123456789abcdef"
	addr := serveNoServers(t, map[string]string{"u": "pw", "m": md5Secret})
	startup := func(user string) []byte {
		return startupPacket(pgproto3.ProtocolVersionNumber, "user\x00"+user+"\x00\x00")
	}
	initial := func(data string) []byte { // SASLInitialResponse
		body := scramMechanism + "\x00"
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(data)))
		return message('p', body+string(n[:])+data)
	}
	for _, tc := range []struct {
		name     string
		in       [][]byte // sent one after the other, each after an authentication request
		wantCode string
	}{
		{"SASL initial response of 1 GiB", [][]byte{startup("u"), header('p', 0x40000003)}, "08P01"},
		{"SASL initial response of 1 GiB, unknown user", [][]byte{startup("nobody"), header('p', 0x40000003)}, "08P01"},
		{"SASL initial response one byte over", [][]byte{startup("u"), header('p', maxSASLMsg+1)}, "08P01"},
		{"SASL initial response at the limit", [][]byte{startup("u"), initial(strings.Repeat("x", maxSASLMsg-4-len(scramMechanism)-1-4))}, "28P01"},
		{"SASL response of 1 GiB", [][]byte{startup("u"), initial("n,,n=,r=abcdef"), header('p', 0x40000003)}, "08P01"},
		{"password message of 1 GiB", [][]byte{startup("m"), header('p', 0x40000003)}, "08P01"},
		{"password message one byte over", [][]byte{startup("m"), header('p', maxPasswordMsg+1)}, "08P01"},
		{"password message at the limit", [][]byte{startup("m"), message('p', strings.Repeat("x", maxPasswordMsg-5)+"\x00")}, "28P01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var got []pgproto3.BackendMessage
			for i, b := range tc.in {
				if _, err := conn.Write(b); err != nil {
					t.Fatal(err)
				}
				if i == len(tc.in)-1 {
					break
				}
				// Wait for the authentication request this answers.
				msgs, err := receiveUntil(t, conn, func(m pgproto3.BackendMessage) bool { return !isError(m) })
				got = append(got, msgs...)
				if err != nil {
					t.Fatalf("after message %d: %v (got %#v)", i, err, got)
				}
			}
			msgs, err := receiveUntil(t, conn, isError)
			got = append(got, msgs...)
			if err != nil {
				t.Fatalf("got %v after %#v, want an ErrorResponse %s", err, got, tc.wantCode)
			}
			if e := got[len(got)-1].(*pgproto3.ErrorResponse); e.Code != tc.wantCode || e.Severity != "FATAL" {
				t.Errorf("got %s %s %q, want FATAL %s", e.Severity, e.Code, e.Message, tc.wantCode)
			}
		})
	}
}

// TestNegotiateProtocolVersion: a startup asking for a newer minor
// version or for protocol options is answered with NegotiateProtocolVersion
// (3.0 and the options, none of which attache knows), then the login goes
// on, as PostgreSQL does; a major version other than 3 is refused with
// 0A000.
func TestNegotiateProtocolVersion(t *testing.T) {
	t.Parallel()
	addr := serveNoServers(t, map[string]string{"u": "pw"})
	for _, tc := range []struct {
		name        string
		version     uint32
		params      string
		wantNPV     bool
		wantOptions []string
		wantCode    string // an ErrorResponse instead of an authentication request
	}{
		{"3.0", 3 << 16, "user\x00u\x00", false, nil, ""},
		{"3.1", 3<<16 | 1, "user\x00u\x00", true, nil, ""},
		{"3.2", 3<<16 | 2, "user\x00u\x00", true, nil, ""},
		{"3.9999", 3<<16 | 9999, "user\x00u\x00", true, nil, ""},
		{"3.0 with options", 3 << 16, "user\x00u\x00_pq_.a\x001\x00database\x00d\x00_pq_.b\x00\x00", true, []string{"_pq_.a", "_pq_.b"}, ""},
		{"3.2 with an option", 3<<16 | 2, "_pq_.test_protocol_negotiation\x00\x00user\x00u\x00", true, []string{"_pq_.test_protocol_negotiation"}, ""},
		{"2.0", 2 << 16, "user\x00u\x00", false, nil, "0A000"},
		{"4.0", 4 << 16, "user\x00u\x00", false, nil, "0A000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(startupPacket(tc.version, tc.params+"\x00")); err != nil {
				t.Fatal(err)
			}
			got, err := receiveUntil(t, conn, func(m pgproto3.BackendMessage) bool {
				_, sasl := m.(*pgproto3.AuthenticationSASL)
				return sasl || isError(m)
			})
			if err != nil {
				t.Fatalf("got %v after %#v", err, got)
			}
			if tc.wantCode != "" {
				if e, ok := got[len(got)-1].(*pgproto3.ErrorResponse); len(got) != 1 || !ok || e.Code != tc.wantCode {
					t.Errorf("got %#v, want one ErrorResponse %s", got, tc.wantCode)
				}
				return
			}
			if !tc.wantNPV {
				if len(got) != 1 {
					t.Errorf("got %#v, want AuthenticationSASL alone", got)
				}
				return
			}
			npv, ok := got[0].(*pgproto3.NegotiateProtocolVersion)
			if len(got) != 2 || !ok {
				t.Fatalf("got %#v, want NegotiateProtocolVersion then AuthenticationSASL", got)
			}
			if npv.NewestMinorProtocol != 0 || !slices.Equal(npv.UnrecognizedOptions, tc.wantOptions) && len(tc.wantOptions)+len(npv.UnrecognizedOptions) > 0 {
				t.Errorf("got NegotiateProtocolVersion(%d, %q), want (0, %q)", npv.NewestMinorProtocol, npv.UnrecognizedOptions, tc.wantOptions)
			}
		})
	}
}

// TestProtocol32Client: a pgx client that asks for protocol 3.2 logs in
// through attache at 3.0 and runs a query.
func TestProtocol32Client(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	addr, _ := f.proxy(t, Config{Mode: TransactionMode})
	conn := connect(t, addr, "app", "app-pw", "&max_protocol_version=3.2")
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("got %d, %v, want 42", n, err)
	}
}

// FuzzAuthenticate feeds what a client sends after its startup packet
// (password messages, SASLInitialResponse, SASLResponse, anything) to
// attache's side of the authentication, for a user with a plain, an md5
// and no secret: it never panics, never logs the client in, and never
// reads a message longer than the startup phase's limits.
func FuzzAuthenticate(f *testing.F) {
	const md5Secret = "md5" + "0123456789abcdef0123456789abcdef"
	p := New(Config{Users: map[string]string{"u": "pw", "m": md5Secret},
		Dial: func(context.Context, *upstream.Endpoint) (net.Conn, string, error) { return nil, "", io.EOF }})
	f.Cleanup(p.Close)
	initial := func(data string) []byte {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(data)))
		return message('p', scramMechanism+"\x00"+string(n[:])+data)
	}
	for _, s := range scramSeeds() {
		f.Add(byte(0), append(initial(string(s)), message('p', string(s))...))
	}
	f.Add(byte(1), message('p', "md5abc\x00"))
	f.Add(byte(2), append(initial("n,,n=,r=abc"), message('p', "c=biws,r=abc,p=AAAA")...))
	f.Add(byte(0), header('p', 0x40000003))
	f.Add(byte(0), append(initial("n,,n=,r=abc"), header('p', 0x40000003)...))
	f.Add(byte(1), header('p', maxPasswordMsg+1))
	f.Add(byte(0), message('X', ""))
	f.Fuzz(func(t *testing.T, who byte, in []byte) {
		user := [...]string{"u", "m", "nobody"}[int(who)%3]
		secret, known := (*p.users.Load())[user]
		srv, cl := net.Pipe()
		defer cl.Close()
		go io.Copy(io.Discard, cl)
		go func() {
			cl.Write(in)
			cl.Close()
		}()
		var longest int
		be := pgproto3.NewBackend(srv, srv)
		_, err := p.authenticate(srv, be, user, secret, known, func(m pgproto3.FrontendMessage) {
			b, _ := m.Encode(nil)
			longest = max(longest, len(b)-1)
		})
		srv.Close()
		if err == nil {
			t.Fatalf("user %q logged in with %q", user, in)
		}
		if longest > maxPasswordMsg {
			t.Errorf("read a message of %d bytes, want at most %d", longest, maxPasswordMsg)
		}
	})
}

// FuzzParseStartup parses startup packet bodies (after the length word)
// as attache reads them before anything else: it never panics, and what
// it accepts as a StartupMessage is protocol 3 with no _pq_ parameter
// left among the ordinary ones.
func FuzzParseStartup(f *testing.F) {
	for _, b := range [][]byte{
		startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u\x00database\x00d\x00\x00"),
		startupPacket(3<<16|2, "user\x00u\x00_pq_.x\x00y\x00\x00"),
		startupPacket(80877103, ""),
		startupPacket(80877102, "\x00\x00\x00\x01\x00\x00\x00\x02"),
		startupPacket(4<<16, "\x00"),
		startupPacket(pgproto3.ProtocolVersionNumber, "user\x00u\x00\x00x"),
	} {
		f.Add(b[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		sp, err := parseStartup(body)
		if err != nil || !sp.startup() {
			return
		}
		if sp.code>>16 != 3 {
			t.Errorf("accepted protocol %d.%d", sp.code>>16, sp.minor())
		}
		for k := range sp.params {
			if strings.HasPrefix(k, pqOptPrefix) {
				t.Errorf("protocol option %q among the parameters", k)
			}
		}
	})
}
