package httpcache

import (
	"testing"
	"time"
)

func TestParseCacheControl(t *testing.T) {
	t.Parallel()
	s := time.Second
	cases := []struct {
		name  string
		lines []string
		check func(d directives) bool
	}{
		{"empty", nil, func(d directives) bool { return d.maxAge == -1 && !d.noStore && d.staleIfError == -1 }},
		{"max-age", []string{"max-age=60"}, func(d directives) bool { return d.maxAge == 60*s }},
		{"case and spaces", []string{" Max-Age = 5 , NO-STORE"}, func(d directives) bool { return d.maxAge == 5*s && d.noStore }},
		{"quoted", []string{`max-age="7", private="set-cookie, x"`}, func(d directives) bool { return d.maxAge == 7*s && d.private }},
		{"invalid is stale", []string{"max-age=abc"}, func(d directives) bool { return d.maxAge == 0 }},
		{"negative is stale", []string{"max-age=-1"}, func(d directives) bool { return d.maxAge == 0 }},
		{"duplicate keeps smallest", []string{"max-age=60", "max-age=10"}, func(d directives) bool { return d.maxAge == 10*s }},
		{"overflow caps", []string{"max-age=99999999999999999999999"}, func(d directives) bool { return d.maxAge == maxDelta*s }},
		{"s-maxage ignored", []string{"s-maxage=100"}, func(d directives) bool { return d.maxAge == -1 }},
		{"max-stale any", []string{"max-stale"}, func(d directives) bool { return d.maxStaleAny && d.maxStale == -1 }},
		{"max-stale n", []string{"max-stale=30"}, func(d directives) bool { return !d.maxStaleAny && d.maxStale == 30*s }},
		{"rfc 5861", []string{"max-age=1, stale-while-revalidate=2, stale-if-error=3"}, func(d directives) bool {
			return d.staleWhileRevalidate == 2*s && d.staleIfError == 3*s
		}},
		{"request", []string{"no-cache, min-fresh=4, only-if-cached"}, func(d directives) bool { return d.noCache && d.minFresh == 4*s && d.onlyIfCached }},
		{"must", []string{"must-revalidate,must-understand,public"}, func(d directives) bool { return d.mustRevalidate && d.mustUnderstand && d.public }},
		{"unterminated quote", []string{`no-cache="a, max-age=5`}, func(d directives) bool { return d.noCache && d.maxAge == -1 }},
		{"commas only", []string{",,, ,"}, func(d directives) bool { return d.maxAge == -1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if d := parseCacheControl(tc.lines); !tc.check(d) {
				t.Errorf("parseCacheControl(%q) = %+v", tc.lines, d)
			}
		})
	}
}

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{"max-age=60", `private="a,b", no-cache`, "max-stale, min-fresh=1", "stale-if-error=99999999999999999999",
		`x="\"`, "no-store,,,=", "max-age=\"10\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := parseCacheControl([]string{s})
		for _, v := range []time.Duration{d.maxAge, d.maxStale, d.minFresh, d.staleIfError, d.staleWhileRevalidate} {
			if v < -1 || v > maxDelta*time.Second {
				t.Fatalf("parseCacheControl(%q): duration %v out of range", s, v)
			}
		}
	})
}
