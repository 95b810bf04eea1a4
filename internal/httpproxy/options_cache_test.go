package httpproxy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func cacheYAML(block string) string {
	return "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: http\n    routes:\n      - match: {prefix: /}\n        to: [{cluster: c}]\n        cache: " +
		block + "\nclusters: [{name: c, endpoints: [\"h:1\"]}]\n"
}

func TestCacheDefaults(t *testing.T) {
	t.Parallel()
	c, err := parse([]byte(cacheYAML("{}")), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	rc := Options(&c.Listeners[0]).Routes[0].Cache
	if rc.MaxBytes != DefaultCacheMaxBytes || rc.MaxObjectBytes != DefaultCacheMaxObjectBytes || rc.CoalesceTimeout.D() != 5*time.Second ||
		!slices.Equal(rc.CredentialHeaders, []string{"cookie"}) || rc.CacheAuthorized || rc.DefaultTTL != 0 {
		t.Errorf("defaults %+v", rc)
	}
	c, err = parse([]byte(cacheYAML("{max_bytes: 1000, credential_headers: []}")), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if rc := Options(&c.Listeners[0]).Routes[0].Cache; rc.MaxObjectBytes != 1000 || len(rc.CredentialHeaders) != 0 {
		t.Errorf("max_object_bytes %d (want max_bytes, 1000), credential_headers %q (want none)", rc.MaxObjectBytes, rc.CredentialHeaders)
	}
}

func TestCacheBadValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, block, want string }{
		{"max_bytes", "{max_bytes: 0}", "listeners[0].routes[0].cache.max_bytes: must be positive (line 8)"},
		{"object over total", "{max_bytes: 10, max_object_bytes: 11}", "listeners[0].routes[0].cache.max_object_bytes: must not be more than max_bytes (10) (line 8)"},
		{"object zero", "{max_object_bytes: 0}", "cache.max_object_bytes: must be positive"},
		{"ttl", "{default_ttl: -1s}", "listeners[0].routes[0].cache.default_ttl: must not be negative (line 8)"},
		{"swr", "{stale_while_revalidate: -1s}", "cache.stale_while_revalidate: must not be negative"},
		{"coalesce", "{coalesce_timeout: 0s}", "cache.coalesce_timeout: must be positive"},
		{"header", "{credential_headers: [\"x api\"]}", `cache.credential_headers[0]: "x api": not a valid header name`},
		{"unknown", "{max_age: 5}", "listeners[0].routes[0].cache.max_age: unknown field (line 8)"},
		{"bool", "{cache_authorized: yes please}", "cache.cache_authorized: expected true or false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(cacheYAML(tc.block)), noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
