package credentials

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attache-proxy/attache/internal/config"
)

func TestSet(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("t1\r\n"), 0o600)
	s, err := New(config.Credentials{BearerTokenFile: tok, Headers: map[string]string{"x-api-key": "k"}})
	if err != nil {
		t.Fatal(err)
	}
	want := func(auth string) {
		t.Helper()
		got := map[string]string{}
		for _, h := range s.Headers() {
			got[h.Name] = h.Value
		}
		if got["Authorization"] != auth || got["X-Api-Key"] != "k" || len(got) != 2 {
			t.Errorf("got %v, want Authorization %q and X-Api-Key k", got, auth)
		}
	}
	want("Bearer t1")
	if !s.Sets("authorization") || !s.Sets("X-API-KEY") || s.Sets("Cookie") {
		t.Error("Sets: wrong answer for a header name")
	}

	os.WriteFile(tok, []byte("t2"), 0o600)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	want("Bearer t2")

	for name, content := range map[string]*string{"missing": nil, "empty": new(string)} {
		if content == nil {
			os.Remove(tok)
		} else {
			os.WriteFile(tok, []byte(*content+"\n"), 0o600)
		}
		err := s.Reload()
		if err == nil || !strings.Contains(err.Error(), tok) {
			t.Errorf("%s file: got %v, want an error naming it", name, err)
		}
		want("Bearer t2")
	}
	os.WriteFile(tok, []byte("t3\n"), 0o600)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	want("Bearer t3")
}

func TestNewNeedsItsFiles(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope")
	for _, cfg := range []config.Credentials{
		{BearerTokenFile: missing},
		{Basic: &config.BasicAuth{Username: "u", PasswordFile: missing}},
	} {
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("%+v: got %v, want an error naming %s", cfg, err, missing)
		}
	}
}

func TestBasic(t *testing.T) {
	t.Parallel()
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("open sesame\n"), 0o600)
	s, err := New(config.Credentials{Basic: &config.BasicAuth{Username: "Aladdin", PasswordFile: pw}})
	if err != nil {
		t.Fatal(err)
	}
	// RFC 7617's example.
	if got := s.Headers(); len(got) != 1 || got[0] != (Header{"Authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="}) {
		t.Errorf("got %v", got)
	}
	var none *Set
	if none.Headers() != nil || none.Sets("Authorization") {
		t.Error("a nil Set must add nothing")
	}
}
