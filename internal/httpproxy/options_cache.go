package httpproxy

import (
	"fmt"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// RouteCache is a route's response cache (docs/http.md, "Response
// cache"): private RFC 9111 semantics, in memory.
type RouteCache struct {
	MaxBytes       int `yaml:"max_bytes"`        // the bound of the route's stored responses
	MaxObjectBytes int `yaml:"max_object_bytes"` // the largest body stored; larger ones stream through
	// DefaultTTL is the heuristic freshness of responses without explicit
	// expiration (RFC 9111 4.2.2); 0: none, they are only revalidated.
	DefaultTTL config.Duration `yaml:"default_ttl"`
	// StaleIfError and StaleWhileRevalidate (RFC 5861) apply to responses
	// that do not carry the directive themselves.
	StaleIfError         config.Duration `yaml:"stale_if_error"`
	StaleWhileRevalidate config.Duration `yaml:"stale_while_revalidate"`
	// CoalesceTimeout is how long a miss waits for another request's
	// upstream call for the same URI before making its own.
	CoalesceTimeout config.Duration `yaml:"coalesce_timeout"`
	// CacheAuthorized stores responses to requests with credentials
	// (Authorization, CredentialHeaders), keyed by them.
	CacheAuthorized bool `yaml:"cache_authorized"`
	// CacheSetCookie stores responses with Set-Cookie.
	CacheSetCookie bool `yaml:"cache_set_cookie"`
	// CredentialHeaders are request fields that carry credentials besides
	// Authorization; default [cookie].
	CredentialHeaders []string `yaml:"credential_headers"`
}

// The defaults of a route's cache.
const (
	DefaultCacheMaxBytes       = 64 << 20
	DefaultCacheMaxObjectBytes = 1 << 20
	DefaultCacheCoalesce       = 5 * time.Second
)

// applyCache fills the defaults of a route's cache at p.
func applyCache(c *config.Check, p string, rc *RouteCache) {
	if rc.MaxBytes == 0 && !c.Has(p+".max_bytes") {
		rc.MaxBytes = DefaultCacheMaxBytes
	}
	if rc.MaxObjectBytes == 0 && !c.Has(p+".max_object_bytes") {
		rc.MaxObjectBytes = min(DefaultCacheMaxObjectBytes, rc.MaxBytes)
	}
	if rc.CoalesceTimeout == 0 && !c.Has(p+".coalesce_timeout") {
		rc.CoalesceTimeout = config.Duration(DefaultCacheCoalesce)
	}
	if rc.CredentialHeaders == nil && !c.Has(p+".credential_headers") {
		rc.CredentialHeaders = []string{"cookie"}
	}
}

// routeCache validates a route's cache block at path p.
func validateCache(c *config.Check, p string, rc *RouteCache) {
	if rc.MaxBytes < 1 {
		c.Errorf(p+".max_bytes", "must be positive")
	}
	switch {
	case rc.MaxObjectBytes < 1:
		c.Errorf(p+".max_object_bytes", "must be positive")
	case rc.MaxBytes >= 1 && rc.MaxObjectBytes > rc.MaxBytes:
		c.Errorf(p+".max_object_bytes", "must not be more than max_bytes (%d)", rc.MaxBytes)
	}
	for _, f := range []struct {
		name string
		d    config.Duration
	}{{"default_ttl", rc.DefaultTTL}, {"stale_if_error", rc.StaleIfError}, {"stale_while_revalidate", rc.StaleWhileRevalidate}} {
		if f.d < 0 {
			c.Errorf(p+"."+f.name, "must not be negative")
		}
	}
	if rc.CoalesceTimeout <= 0 {
		c.Errorf(p+".coalesce_timeout", "must be positive (how long a miss waits for another's upstream call)")
	}
	for i, h := range rc.CredentialHeaders {
		if !config.ValidHeaderName(h) {
			c.Errorf(fmt.Sprintf("%s.credential_headers[%d]", p, i), "%q: not a valid header name", h)
		}
	}
}
