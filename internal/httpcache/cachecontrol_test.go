package httpcache

import (
	"net/http"
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

// FuzzStoredResponse: whatever the freshness fields of a response, the
// entry built from it has a non-negative age and freshness and serves.
func FuzzStoredResponse(f *testing.F) {
	f.Add("max-age=5, stale-if-error=3", "Thu, 01 Jan 2026 00:00:00 GMT", "Mon, 02 Jan 2006 15:04:05 GMT", "12", "Accept, *")
	f.Add("public", "0", "garbage", "-1", "")
	f.Add("", "", "", "99999999999999999999", "a,,b")
	f.Fuzz(func(t *testing.T, cc, expires, date, age, vary string) {
		ck := newClock()
		c := testCache(ck, func(cfg *Config) { cfg.DefaultTTL = time.Minute })
		o := &origin{respond: func(w http.ResponseWriter, r *http.Request) {
			for k, v := range map[string]string{"Cache-Control": cc, "Expires": expires, "Date": date, "Age": age, "Vary": vary, "ETag": `"e"`} {
				if v != "" {
					w.Header().Set(k, v)
				}
			}
			w.Write([]byte("body"))
		}}
		get(c, o, "/f")
		ck.add(time.Second)
		if w, _ := get(c, o, "/f"); w.Body.String() != "body" && w.Code != http.StatusNotModified {
			t.Fatalf("second request: %d %q", w.Code, w.Body.String())
		}
		for _, vs := range c.store.byKey {
			for _, e := range vs {
				if e.freshness < 0 || e.age(ck.now()) < 0 {
					t.Fatalf("freshness %v age %v", e.freshness, e.age(ck.now()))
				}
			}
		}
	})
}
