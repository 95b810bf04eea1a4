package userlist

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	in := `; comment
# another

"alice" "secret"
"bob"   "md5` + strings.Repeat("a", 32) + `"  extra
"car""l" "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
`
	users, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	for u, kind := range map[string]Kind{"alice": Plain, "bob": MD5, `car"l`: SCRAM} {
		s, ok := users[u]
		if !ok || KindOf(s) != kind {
			t.Errorf("user %q: got %q kind %v, want kind %v", u, s, KindOf(s), kind)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"alice secret", `line 1: want "user" "secret"`},
		{`"alice" "secret`, "line 1: unclosed quote"},
		{`"a" "x"` + "\n" + `"a" "y"`, `line 2: user "a" is listed twice`},
		{`"" "x"`, "line 1: empty user name"},
		{`"a" "SCRAM-SHA-256$x"`, `line 1: user "a": malformed SCRAM-SHA-256 secret`},
	} {
		_, err := Parse(strings.NewReader(tc.in))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.in, err, tc.want)
		}
	}
}
