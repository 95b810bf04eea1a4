package pgproxy

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// serverFirst is a server-first-message extending c's nonce.
func serverFirst(c *scramClient, iter string) []byte {
	salt := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	return []byte(fmt.Sprintf("r=%sSRV,s=%s,i=%s", c.clientNonce, salt, iter))
}

// TestSCRAMIterationCap: a server asking for more than maxSCRAMIterations
// is refused at once, where attache used to run PBKDF2 for as long as the
// server asked (1e9 iterations: over ten minutes of a CPU).
func TestSCRAMIterationCap(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		iter    string
		wantErr string // "" for success
	}{
		{"PostgreSQL's default", "4096", ""},
		{"one", "1", ""},
		{"one over the cap", strconv.Itoa(maxSCRAMIterations + 1), "more than attache does"},
		{"a billion", "1000000000", "more than attache does"},
		{"beyond int32", "99999999999", "more than attache does"},
		{"zero", "0", "bad iteration count"},
		{"negative", "-5", "bad iteration count"},
		{"not a number", "many", "bad iteration count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newSCRAMClient("pw")
			c.first()
			done := make(chan error, 1)
			go func() {
				_, err := c.final(serverFirst(c, tc.iter))
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("got no answer within 30 s, want %q", tc.wantErr)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("got %v, want success", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// scramSeeds are client-first, server-first, client-final and
// server-final messages of one exchange, and malformed variants.
func scramSeeds() [][]byte {
	c := newSCRAMClient("pw")
	sf := serverFirst(c, "4096")
	cf, _ := c.final(sf)
	return [][]byte{
		c.first(), sf, cf, []byte("v=" + base64.StdEncoding.EncodeToString(c.serverSig)),
		[]byte("n,,n=,r="), []byte("p=tls-server-end-point,,n=,r=x"), []byte("y,,n=u,r=abc"), []byte("n,"),
		[]byte("r=,s=,i="), []byte("r=x,s=!!,i=1"), []byte("c=biws,r=x,p="), []byte("e=other-error"), []byte(""),
	}
}

// fuzzIterations skips inputs that ask for more than a few iterations:
// the cap is tested above, and a fuzz run must stay fast.
func fuzzIterations(msg []byte) bool {
	i, err := strconv.Atoi(attrs(string(msg))['i'])
	return err != nil || i <= 4096
}

// FuzzSCRAMClient feeds server messages to attache's client side of SCRAM
// (what a server sends during attache's login): it never panics, and a
// server-first it accepts yields a client-final with a proof.
func FuzzSCRAMClient(f *testing.F) {
	for _, s := range scramSeeds() {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, first, final []byte) {
		c := newSCRAMClient("pw")
		c.clientNonce = "N"
		if !fuzzIterations(first) {
			return
		}
		cf, err := c.final(first)
		if err != nil {
			return
		}
		if !strings.Contains(string(cf), ",p=") {
			t.Errorf("client-final %q has no proof", cf)
		}
		c.verify(final)
	})
}

// FuzzSCRAMServer feeds client messages to attache's server side of SCRAM
// (SASLInitialResponse and SASLResponse data from a client that is not
// logged in): it never panics, and never accepts a proof for a verifier
// of a password the client does not know.
func FuzzSCRAMServer(f *testing.F) {
	for _, s := range scramSeeds() {
		f.Add(s, s)
	}
	v := NewVerifier("secret", 4096)
	f.Fuzz(func(t *testing.T, first, final []byte) {
		s := &scramServer{v: v}
		if _, err := s.first(first); err != nil {
			return
		}
		if _, err := s.final(final); err == nil {
			t.Errorf("client-final %q accepted without the password", final)
		}
	})
}

// FuzzParseVerifier parses SCRAM secrets (from the users file or the
// auth query).
func FuzzParseVerifier(f *testing.F) {
	f.Add(NewVerifier("pw", 4096).String())
	f.Add("SCRAM-SHA-256$4096:c2FsdA==$a:b")
	f.Add("SCRAM-SHA-256$")
	f.Add("md5abc")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVerifier(s)
		if err != nil {
			return
		}
		if v.Iter < 1 || len(v.StoredKey) != 32 || len(v.ServerKey) != 32 {
			t.Errorf("%q: accepted %+v", s, v)
		}
	})
}

// TestLoginMessageLimit: a server that announces a huge message during
// attache's login is refused at once; before, attache reserved the
// announced length (up to 1 GiB) and waited for it.
func TestLoginMessageLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		typ  byte
		n    uint32
	}{
		{"authentication request of 1 GiB", 'R', 0x3ffffff0},
		{"notice of 1 GiB", 'N', 0x3ffffff0},
		{"parameter status of 2 MiB", 'S', 2 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, cl := net.Pipe()
			defer srv.Close()
			go func() {
				if _, err := readStartup(srv); err == nil {
					srv.Write(header(tc.typ, tc.n))
				}
			}()
			cl.SetDeadline(time.Now().Add(10 * time.Second))
			_, err := Login(cl, "u", "d", "pw", nil)
			var long *pgproto3.ExceededMaxBodyLenErr
			if !errors.As(err, &long) {
				t.Errorf("got %v, want the message refused for its length", err)
			}
		})
	}
}
