package httpcache

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxDelta is the largest delta-seconds value kept (RFC 9111 1.2.2: a
// larger one is taken as 2^31).
const maxDelta = 1 << 31

// maxDirectives bounds the directives read from one field value, so that a
// peer cannot make a parse cost more than a few hundred steps.
const maxDirectives = 64

// directives is a parsed Cache-Control field (request or response). A
// duration of -1 is an absent directive.
type directives struct {
	noStore, noCache, mustRevalidate, public, private, mustUnderstand bool
	onlyIfCached, maxStaleAny                                         bool
	maxAge, maxStale, minFresh, staleIfError, staleWhileRevalidate    time.Duration
}

// parseCacheControl parses the Cache-Control field lines of h (RFC 9111
// 5.2): directives are case-insensitive tokens with an optional token or
// quoted-string argument; unknown directives are ignored. A delta-seconds
// argument that is not a non-negative integer counts as 0 (RFC 9111 4.2.1
// encourages treating such a response as stale); a repeated directive
// keeps the smallest value. The qualified forms no-cache="f" and
// private="f" count as their unqualified forms, which is what RFC 9111
// 5.2.2.4 and 5.2.2.7 allow.
func parseCacheControl(lines []string) directives {
	d := directives{maxAge: -1, maxStale: -1, minFresh: -1, staleIfError: -1, staleWhileRevalidate: -1}
	n := 0
	for _, line := range lines {
		for len(line) > 0 && n < maxDirectives {
			var name, arg string
			name, arg, line = nextDirective(line)
			if name == "" {
				continue
			}
			n++
			switch strings.ToLower(name) {
			case "no-store":
				d.noStore = true
			case "no-cache":
				d.noCache = true
			case "must-revalidate":
				d.mustRevalidate = true
			case "public":
				d.public = true
			case "private":
				d.private = true
			case "must-understand":
				d.mustUnderstand = true
			case "only-if-cached":
				d.onlyIfCached = true
			case "max-age":
				d.maxAge = minDelta(d.maxAge, arg)
			case "max-stale":
				if arg == "" {
					d.maxStaleAny = true
				} else {
					d.maxStale = minDelta(d.maxStale, arg)
				}
			case "min-fresh":
				d.minFresh = minDelta(d.minFresh, arg)
			case "stale-if-error":
				d.staleIfError = minDelta(d.staleIfError, arg)
			case "stale-while-revalidate":
				d.staleWhileRevalidate = minDelta(d.staleWhileRevalidate, arg)
			}
		}
	}
	return d
}

// nextDirective splits the first directive off s: its name, its argument
// (unquoted), and the rest after the next comma.
func nextDirective(s string) (name, arg, rest string) {
	s = strings.TrimLeft(s, " \t,")
	i := strings.IndexAny(s, "=,")
	if i < 0 {
		return strings.TrimSpace(s), "", ""
	}
	name = strings.TrimSpace(s[:i])
	if s[i] == ',' {
		return name, "", s[i+1:]
	}
	s = strings.TrimLeft(s[i+1:], " \t")
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		for j := 1; j < len(s); j++ {
			switch c := s[j]; {
			case c == '\\' && j+1 < len(s):
				j++
				b.WriteByte(s[j])
			case c == '"':
				rest = s[j+1:]
				if k := strings.IndexByte(rest, ','); k >= 0 {
					rest = rest[k+1:]
				} else {
					rest = ""
				}
				return name, b.String(), rest
			default:
				b.WriteByte(c)
			}
		}
		return name, b.String(), "" // unterminated: to the end
	}
	if k := strings.IndexByte(s, ','); k >= 0 {
		return name, strings.TrimSpace(s[:k]), s[k+1:]
	}
	return name, strings.TrimSpace(s), ""
}

// minDelta is the smaller of cur (-1: none) and the delta-seconds arg.
func minDelta(cur time.Duration, arg string) time.Duration {
	v := parseDelta(arg)
	if cur >= 0 && cur < v {
		return cur
	}
	return v
}

// parseDelta reads delta-seconds; anything else is 0.
func parseDelta(s string) time.Duration {
	if s == "" || len(s) > 20 {
		if s != "" && strings.Trim(s, "0123456789") == "" {
			return maxDelta * time.Second
		}
		return 0
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > maxDelta {
		n = maxDelta
	}
	return time.Duration(n) * time.Second
}

// requestDirectives reads a request's Cache-Control, and Pragma: no-cache
// where there is no Cache-Control (RFC 9111 5.4).
func requestDirectives(h http.Header) directives {
	cc := h.Values("Cache-Control")
	d := parseCacheControl(cc)
	if len(cc) == 0 {
		for _, p := range h.Values("Pragma") {
			for t := range strings.SplitSeq(p, ",") {
				if strings.EqualFold(strings.TrimSpace(t), "no-cache") {
					d.noCache = true
				}
			}
		}
	}
	return d
}
