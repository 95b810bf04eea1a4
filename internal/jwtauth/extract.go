package jwtauth

import (
	"net/http"
	"strings"
)

// Source is a place a request may carry a token: a header (with its
// scheme prefix, matched without regard to case) or a cookie.
type Source struct {
	Header string // canonical name; empty: Cookie names a cookie
	Prefix string
	Cookie string
}

// Extractor finds a request's token in the provider's sources.
type Extractor struct{ sources []Source }

// NewExtractor returns the extractor of sources, in order.
func NewExtractor(sources []Source) *Extractor {
	x := &Extractor{}
	for _, s := range sources {
		if s.Header != "" {
			s.Header = http.CanonicalHeaderKey(s.Header)
		}
		x.sources = append(x.sources, s)
	}
	return x
}

// Found is where a token was found.
type Found struct {
	Token  string
	Source Source
}

// Extract returns the request's token. No token is (Found{}, nil); a
// token in more than one place, or a header carrying one given twice, is
// ReasonMultiple (RFC 6750 2: one method only), since a proxy and its
// upstream could each read a different one. A header without the
// source's prefix (Authorization: Basic ...) carries no token for it.
func (x *Extractor) Extract(h http.Header) (Found, *Error) {
	var f Found
	n := 0
	for _, s := range x.sources {
		if s.Header != "" {
			for _, v := range h[s.Header] {
				if len(v) < len(s.Prefix) || !strings.EqualFold(v[:len(s.Prefix)], s.Prefix) {
					continue
				}
				n++
				f = Found{Token: strings.TrimSpace(v[len(s.Prefix):]), Source: s}
			}
			continue
		}
		for _, line := range h["Cookie"] {
			cs, err := http.ParseCookie(line)
			if err != nil {
				continue
			}
			for _, c := range cs {
				if c.Name == s.Cookie {
					n++
					f = Found{Token: c.Value, Source: s}
				}
			}
		}
	}
	switch {
	case n > 1:
		return Found{}, fail(ReasonMultiple)
	case n == 1 && f.Token == "":
		return Found{}, fail(ReasonMalformed)
	}
	return f, nil
}

// Strip removes the token's source from h: the header, or the cookie
// from the Cookie lines (the others stay).
func Strip(h http.Header, s Source) {
	if s.Header != "" {
		h.Del(s.Header)
		return
	}
	var keep []string
	for _, line := range h["Cookie"] {
		var parts []string
		for p := range strings.SplitSeq(line, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(p), "=")
			if name != s.Cookie && strings.TrimSpace(p) != "" {
				parts = append(parts, strings.TrimSpace(p))
			}
		}
		if len(parts) > 0 {
			keep = append(keep, strings.Join(parts, "; "))
		}
	}
	if keep == nil {
		h.Del("Cookie")
	} else {
		h["Cookie"] = keep
	}
}
