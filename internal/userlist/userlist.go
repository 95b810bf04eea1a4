// Package userlist reads pgbouncer's auth_file format (userlist.txt): one
// `"user" "secret"` pair per line, a doubled quote ("") standing for a
// quote inside a field, and blank lines or lines starting with ';' or '#'
// as comments. A secret is a plain password, "md5" followed by the 32 hex
// digits of md5(password + user), or a SCRAM-SHA-256 verifier as
// PostgreSQL stores it: SCRAM-SHA-256$<iter>:<salt>$<storedkey>:<serverkey>.
package userlist

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// Kind is the form of a secret.
type Kind int

const (
	Plain Kind = iota
	MD5
	SCRAM
)

var (
	md5Secret   = regexp.MustCompile(`^md5[0-9a-f]{32}$`)
	scramSecret = regexp.MustCompile(`^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$`)
)

// KindOf tells the form of a secret.
func KindOf(secret string) Kind {
	switch {
	case md5Secret.MatchString(secret):
		return MD5
	case strings.HasPrefix(secret, "SCRAM-SHA-256$"):
		return SCRAM
	}
	return Plain
}

// Load reads the file at path.
func Load(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Parse reads a users file: user name to secret. An error names the line.
func Parse(r io.Reader) (map[string]string, error) {
	users := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == ';' || line[0] == '#' {
			continue
		}
		user, rest, err := field(line)
		if err == nil {
			var secret string
			secret, _, err = field(strings.TrimLeft(rest, " \t"))
			if err == nil && user == "" {
				err = fmt.Errorf("empty user name")
			}
			if err == nil && KindOf(secret) == SCRAM && !scramSecret.MatchString(secret) {
				err = fmt.Errorf("user %q: malformed SCRAM-SHA-256 secret (want SCRAM-SHA-256$<iter>:<salt>$<storedkey>:<serverkey>)", user)
			}
			if err == nil {
				if _, dup := users[user]; dup {
					err = fmt.Errorf("user %q is listed twice", user)
				}
				users[user] = secret
			}
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return users, nil
}

// field reads one double-quoted field at the start of s.
func field(s string) (value, rest string, err error) {
	if !strings.HasPrefix(s, `"`) {
		return "", "", fmt.Errorf(`want "user" "secret"`)
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		return b.String(), s[i+1:], nil
	}
	return "", "", fmt.Errorf("unclosed quote")
}
