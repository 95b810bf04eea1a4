package pgproxy

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/attache-proxy/attache/internal/testenv"
)

func TestLoginSCRAMAgainstPostgres(t *testing.T) {
	pg := testenv.Postgres(t)
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", pg.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	s, err := Login(dial(), pg.User, "postgres", pg.Password, map[string]string{"application_name": "attache-test"})
	if err != nil {
		t.Fatalf("SCRAM login: %v", err)
	}
	if s.Params["application_name"] != "attache-test" || s.Params["server_encoding"] != "UTF8" || s.PID == 0 {
		t.Errorf("session: params %v pid %d", s.Params, s.PID)
	}
	_, err = Login(dial(), pg.User, "postgres", "wrong", nil)
	var se *ServerError
	if !errors.As(err, &se) || se.Code != "28P01" {
		t.Errorf("wrong password: got %v, want SQLSTATE 28P01", err)
	}
}

// TestVerifierFromPostgres: the server side of SCRAM checks our client
// against the verifier PostgreSQL itself stored for the password.
func TestVerifierFromPostgres(t *testing.T) {
	pg := testenv.Postgres(t)
	c, _ := net.DialTimeout("tcp", pg.Addr, 2*time.Second)
	defer c.Close()
	s, err := Login(c, pg.User, "postgres", pg.Password, nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := simpleQuery(t, s, "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
	v, err := ParseVerifier(secret)
	if err != nil {
		t.Fatalf("parse %q: %v", secret, err)
	}
	if v.String() != secret {
		t.Errorf("round trip: %q != %q", v.String(), secret)
	}
	exchange := func(password string) error {
		cl := newSCRAMClient(password)
		sv := &scramServer{v: v}
		sf, err := sv.first(cl.first())
		if err != nil {
			return err
		}
		cf, err := cl.final(sf)
		if err != nil {
			return err
		}
		fin, err := sv.final(cf)
		if err != nil {
			return err
		}
		return cl.verify(fin)
	}
	if err := exchange(pg.Password); err != nil {
		t.Errorf("right password: %v", err)
	}
	if err := exchange("wrong"); !errors.Is(err, errWrongPassword) {
		t.Errorf("wrong password: got %v", err)
	}
	if err := exchange(pg.Password + "x"); err == nil {
		t.Error("near password accepted")
	}
	// a verifier derived here works the same way
	mine := NewVerifier("hunter2", 4096)
	again, err := ParseVerifier(mine.String())
	if err != nil || again.Iter != 4096 {
		t.Fatalf("own verifier: %v", err)
	}
}

func TestMD5Password(t *testing.T) {
	// md5(md5("secret"+"alice") + salt), as libpq computes it
	got := md5Password("alice", "secret", [4]byte{1, 2, 3, 4})
	if len(got) != 35 || got[:3] != "md5" {
		t.Errorf("got %q", got)
	}
}
