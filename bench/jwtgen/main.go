// Command jwtgen writes a JWKS with one new RS256 key to the file its
// argument names and prints a token signed by it (iss and aud "bench",
// valid for a day), for bench/http.sh's JWT-validated route.
package main

import (
	"fmt"
	"os"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/attache-proxy/attache/internal/jwtauth/jwttest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "jwtgen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: jwtgen JWKS_FILE")
	}
	k := jwttest.NewKey("bench-1", jose.RS256)
	if err := os.WriteFile(args[0], jwttest.JWKS(k), 0o644); err != nil {
		return err
	}
	now := time.Now()
	fmt.Println(k.Sign(map[string]any{"iss": "bench", "aud": "bench", "sub": "wrk",
		"iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix()}, nil))
	return nil
}
