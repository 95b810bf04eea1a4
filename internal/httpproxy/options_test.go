package httpproxy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestHTTPDefaults: a listener with only a cluster gets one catch-all
// route; routes and retries get their defaults.
func TestHTTPDefaults(t *testing.T) {
	c, err := parse([]byte(`
listeners:
  - {name: a, address: "127.0.0.1:7000", protocol: http, cluster: b}
  - {name: r, address: "127.0.0.1:7001", protocol: http, routes: [{match: {prefix: /}, to: [{cluster: b}], retries: {}}]}
clusters: [{name: b, endpoints: ["127.0.0.1:7001"], circuit_breaker: {}, health_check: {type: http}}]
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	a, r, b := Options(&c.Listeners[0]), Options(&c.Listeners[1]).Routes[0], c.Clusters[0]
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"catch-all route prefix", a.Routes[0].Match.Prefix, "/"},
		{"catch-all route cluster", a.Routes[0].To[0].Cluster, "b"},
		{"route name", a.Routes[0].Name, "a/0"},
		{"weight", a.Routes[0].To[0].Weight, 1},
		{"route timeout", r.Timeout.D(), DefaultRouteTimeout},
		{"retry attempts", r.Retries.Attempts, 2},
		{"retry on", fmt.Sprint(r.Retries.On), "[connect_failure reset 5xx]"},
		{"retry budget", r.Retries.BudgetPercent, 20},
		{"access log", a.AccessLog, "off"},
		{"http version", clusterOptions(&b).Version, "auto"},
		{"max idle", clusterOptions(&b).MaxIdlePerEndpoint, DefaultMaxIdlePerEndpoint},
		{"breaker open_for", clusterOptions(&b).CircuitBreaker.OpenFor.D(), 30 * time.Second},
		{"check path", b.HealthCheck.Path, "/"},
		{"check status", fmt.Sprint(b.HealthCheck.ExpectStatus), "[200-299]"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// TestBadValues: every bad value of listeners[].http is refused with its
// path and line (the tests write the keys where they were before
// listeners[].http, which are still accepted).
func TestBadValues(t *testing.T) {
	t.Parallel()
	const base = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	const httpBase = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, routes: "
	const httpEnd = "}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]"
	for _, tc := range []struct{ name, yaml, want string }{
		{"http no routes", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].http.routes: an http listener needs routes"},
		{"tcp with routes", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c, routes: [{match: {prefix: /}, to: [{cluster: c}]}]}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].routes: only for protocol http"},
		{"route two matches", httpBase + "[{match: {prefix: /, path: /x}, to: [{cluster: c}]}]" + httpEnd, "listeners[0].routes[0].match: give only one of prefix, path or regex"},
		{"route no match", httpBase + "[{to: [{cluster: c}]}]" + httpEnd, "listeners[0].routes[0].match: needs one of prefix, path or regex"},
		{"route bad regex", httpBase + "[{match: {regex: \"(\"}, to: [{cluster: c}]}]" + httpEnd, "listeners[0].routes[0].match.regex: error parsing regexp"},
		{"route method case", httpBase + "[{match: {prefix: /, methods: [get]}, to: [{cluster: c}]}]" + httpEnd, `"get": want an upper-case method`},
		{"route unknown cluster", httpBase + "[{match: {prefix: /}, to: [{cluster: cc}]}]" + httpEnd, `listeners[0].routes[0].to[0].cluster: unknown cluster "cc" (line 1); did you mean "c"?`},
		{"route weight", httpBase + "[{match: {prefix: /}, to: [{cluster: c, weight: 20000}]}]" + httpEnd, "to[0].weight: must be 1-10000"},
		{"sticky name", httpBase + "[{match: {prefix: /}, to: [{cluster: c}], sticky: {by: header}}]" + httpEnd, "sticky.name: required with by: header"},
		{"sticky by", httpBase + "[{match: {prefix: /}, to: [{cluster: c}], sticky: {by: ip}}]" + httpEnd, `unknown sticky key "ip"`},
		{"retry on", httpBase + "[{match: {prefix: /}, to: [{cluster: c}], retries: {on: [5xxx]}}]" + httpEnd, `retries.on[0]: unknown retry condition "5xxx" (line 1); did you mean "5xx"?`},
		{"retry attempts", httpBase + "[{match: {prefix: /}, to: [{cluster: c}], retries: {attempts: 11}}]" + httpEnd, "retries.attempts: must be 1-10"},
		{"per try over route", httpBase + "[{match: {prefix: /}, to: [{cluster: c}], timeout: 1s, retries: {per_try_timeout: 2s}}]" + httpEnd, "per_try_timeout: must not be longer than the route timeout (1s)"},
		{"rewrite prefix", httpBase + "[{match: {prefix: /a}, to: [{cluster: c}], rewrite: {prefix: b}}]" + httpEnd, "rewrite.prefix: must start with /"},
		{"http version", base + "clusters: [{name: c, endpoints: [\"h:1\"], http: {version: \"3\"}}]", `unknown HTTP version "3"`},
		{"h2 needs tls", base + "clusters: [{name: c, endpoints: [\"h:1\"], http: {version: \"2\"}}]", `"2" needs tls`},
		{"breaker open_for", base + "clusters: [{name: c, endpoints: [\"h:1\"], circuit_breaker: {open_for: -1s}}]", "circuit_breaker.open_for: must be positive"},
		{"access log", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, cluster: c, access_log: yes}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", `unknown access log format "yes"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), noEnv)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestUnusedFields: http's keys on another listener, and fields an http
// listener does not read, are refused.
func TestUnusedFields(t *testing.T) {
	t.Parallel()
	const tcp = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	const redis = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: redis, cluster: c}]\n"
	const pgPlain = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: postgres, cluster: c}]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"access log on tcp", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c, access_log: json}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].access_log: only for protocol http (line 1)"},
		{"cluster beside routes", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, cluster: d, routes: [{match: {prefix: /}, to: [{cluster: c}]}]}]\nclusters: [{name: c, endpoints: [\"h:1\"]}, {name: d, endpoints: [\"h:2\"]}]", "listeners[0].cluster: not used when routes are given"},
		{"sticky name with client_ip", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, routes: [{match: {prefix: /}, to: [{cluster: c}], sticky: {by: client_ip, name: x}}]}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].routes[0].sticky.name: not used with by: client_ip"},
		{"sticky on one cluster", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, routes: [{match: {prefix: /}, to: [{cluster: c}], sticky: {by: client_ip}}]}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]", "listeners[0].routes[0].sticky: not used by a route to one cluster (it keeps a client on one side of a split) (line 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), noEnv)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestWireValues: what a route adds to the requests it sends cannot
// carry a byte that ends a header line or a URI component.
func TestWireValues(t *testing.T) {
	t.Parallel()
	const httpBase = "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, routes: [{match: {prefix: /}, to: [{cluster: c}], "
	const httpEnd = "}]}]\nclusters: [{name: c, endpoints: [\"h:1\"]}]"
	for _, tc := range []struct{ name, yaml, want string }{
		{"header value CRLF", httpBase + `headers: {add: {X-A: "v\r\nGET /admin HTTP/1.1"}}` + httpEnd, "listeners[0].routes[0].headers.add.X-A: the value holds a line break, NUL or another control character (RFC 9110 5.5) (line 1)"},
		{"header value LF", httpBase + `headers: {add: {X-A: "v\nX-B: 1"}}` + httpEnd, "listeners[0].routes[0].headers.add.X-A: the value holds a line break"},
		{"header value NUL", httpBase + `headers: {add: {X-A: "v\0"}}` + httpEnd, "listeners[0].routes[0].headers.add.X-A: the value holds"},
		{"header value DEL", httpBase + `headers: {add: {X-A: "v\x7f"}}` + httpEnd, "listeners[0].routes[0].headers.add.X-A: the value holds"},
		{"header name", httpBase + `headers: {add: {"X A": v}}` + httpEnd, "listeners[0].routes[0].headers.add.X A: invalid header name"},
		{"rewrite host CRLF", httpBase + `rewrite: {host: "a\r\nX-Injected: 1"}` + httpEnd, `listeners[0].routes[0].rewrite.host: "a\r\nX-Injected: 1": want host or host:port (RFC 9110 7.2) (line 1)`},
		{"rewrite host path", httpBase + `rewrite: {host: "a/b"}` + httpEnd, `listeners[0].routes[0].rewrite.host: "a/b": want host or host:port`},
		{"rewrite host userinfo", httpBase + `rewrite: {host: "u@a"}` + httpEnd, `listeners[0].routes[0].rewrite.host: "u@a": want host or host:port`},
		{"rewrite host space", httpBase + `rewrite: {host: "a b"}` + httpEnd, `rewrite.host: "a b": want host or host:port`},
		{"rewrite prefix CRLF", httpBase + `rewrite: {prefix: "/a HTTP/1.1\r\nX: y"}` + httpEnd, `listeners[0].routes[0].rewrite.prefix: "/a HTTP/1.1\r\nX: y": want a path of URI characters`},
		{"rewrite prefix query", httpBase + `rewrite: {prefix: "/a?b"}` + httpEnd, `rewrite.prefix: "/a?b": want a path`},
		{"rewrite prefix escape", httpBase + `rewrite: {prefix: "/a%zz"}` + httpEnd, `rewrite.prefix: "/a%zz": want a path`},
		{"sticky header name", httpBase + `sticky: {by: header, name: "X A"}` + httpEnd, `listeners[0].routes[0].sticky.name: "X A": not a valid header or cookie name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), noEnv)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
	for _, ok := range []struct{ name, yaml string }{
		{"header value with tab and utf-8", httpBase + `headers: {add: {X-A: "a\tb é"}}, rewrite: {host: "api.example.com:8443", prefix: "/v2/a%20b;x=1"}` + httpEnd},
		{"ipv6 host", httpBase + `rewrite: {host: "[::1]:80"}` + httpEnd},
	} {
		if _, err := parse([]byte(ok.yaml), noEnv); err != nil {
			t.Errorf("%s: got %v, want no error", ok.name, err)
		}
	}
}

// TestRedactedSecrets: /config shows a route's header values redacted
// (match and add), under the key the file wrote them at or the new one,
// and what it shows loads again.
func TestRedactedSecrets(t *testing.T) {
	t.Parallel()
	for _, routes := range []string{"    routes:\n", "    http:\n     routes:\n"} {
		c, err := parse([]byte(`
listeners:
  - name: l
    address: 127.0.0.1:7000
    protocol: http
`+routes+`      - match: {prefix: /, headers: {X-Api-Key: match-s3cret}}
        to: [{cluster: c}]
        headers: {add: {Authorization: "Bearer add-s3cret"}}
clusters:
  - name: c
    endpoints: ["h:1"]
`), noEnv)
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.MarshalRedacted()
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{"match-s3cret", "add-s3cret"} {
			if strings.Contains(string(out), secret) {
				t.Errorf("got %q in /config, want it redacted:\n%s", secret, out)
			}
		}
		for _, kept := range []string{"X-Api-Key", "Authorization", "http:\n"} {
			if !strings.Contains(string(out), kept) {
				t.Errorf("got no %q in /config, want it kept:\n%s", kept, out)
			}
		}
		if _, err := parse(out, noEnv); err != nil {
			t.Errorf("the rendered config does not load again: %v\n%s", err, out)
		}
	}
}

// TestUsedFieldsAccepted: clusters[].http where an http listener uses the
// cluster, or on a cluster no listener uses, loads.
func TestUsedFieldsAccepted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml string }{
		{"breaker on http", "listeners: [{name: l, address: \"127.0.0.1:7000\", protocol: http, cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"], circuit_breaker: {}, http: {version: \"1.1\"}, outlier_detection: {consecutive_5xx: 2}}]"},
		{"breaker on a cluster used by tcp and http", "listeners:\n  - {name: l, address: \"127.0.0.1:7000\", cluster: c}\n  - {name: h, address: \"127.0.0.1:7001\", protocol: http, cluster: c}\nclusters: [{name: c, endpoints: [\"h:1\"], circuit_breaker: {}}]"},
		{"unused cluster", "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1\"]}, {name: spare, endpoints: [\"h:2\"], circuit_breaker: {}}]"},
	} {
		if _, err := parse([]byte(tc.yaml), noEnv); err != nil {
			t.Errorf("%s: got %v, want no error", tc.name, err)
		}
	}
}

// TestAliases: the keys http's options had before listeners[].http and
// clusters[].http are still read where they were, their problems reported
// at the path and line written; a file writing both forms is refused.
func TestAliases(t *testing.T) {
	t.Parallel()
	const old = `
listeners:
  - name: l
    address: "127.0.0.1:7000"
    protocol: http
    access_log: json
    routes:
      - {match: {prefix: /}, to: [{cluster: c}], jwt: {provider: p}}
    jwt_providers:
      - {name: p, jwks: {file: /dev/null}}
clusters:
  - name: c
    endpoints: ["h:1"]
    circuit_breaker: {max_requests: 7}
    rate_limit: {requests: 9}
`
	const new = `
listeners:
  - name: l
    address: "127.0.0.1:7000"
    protocol: http
    http:
      access_log: json
      routes:
        - {match: {prefix: /}, to: [{cluster: c}], jwt: {provider: p}}
      jwt_providers:
        - {name: p, jwks: {file: /dev/null}}
clusters:
  - name: c
    endpoints: ["h:1"]
    http:
      circuit_breaker: {max_requests: 7}
      rate_limit: {requests: 9}
`
	var got [2]string
	for i, y := range []string{old, new} {
		c, err := parse([]byte(y), noEnv)
		if err != nil {
			t.Fatalf("form %d: %v", i, err)
		}
		o, co := Options(&c.Listeners[0]), clusterOptions(&c.Clusters[0])
		if o.AccessLog != "json" || len(o.Routes) != 1 || o.Routes[0].JWT.Provider != "p" || len(o.JWTProviders) != 1 ||
			co.CircuitBreaker.MaxRequests != 7 || co.RateLimit.Requests != 9 || co.RateLimit.Burst != 9 {
			t.Errorf("form %d: got %+v %+v", i, *o, *co)
		}
		out, err := c.MarshalRedacted()
		if err != nil {
			t.Fatal(err)
		}
		got[i] = string(out)
	}
	if got[0] != got[1] {
		t.Errorf("the two forms render differently:\n%s\n---\n%s", got[0], got[1])
	}
	if !strings.Contains(got[0], "    http:\n") {
		t.Errorf("rendered without http blocks:\n%s", got[0])
	}

	const head = "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: http\n"
	const tail = "clusters:\n  - name: c\n    endpoints: [\"h:1\"]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"both routes", head + "    routes: [{match: {prefix: /}, to: [{cluster: c}]}]\n    http:\n      routes: [{match: {prefix: /}, to: [{cluster: c}]}]\n" + tail,
			"listeners[0].routes: given twice: also listeners[0].http.routes (line 5)"},
		{"both breakers", head + "    cluster: c\n" + tail + "    circuit_breaker: {}\n    http: {circuit_breaker: {}}\n",
			"clusters[0].circuit_breaker: given twice: also clusters[0].http.circuit_breaker (line 9)"},
		{"error under old key", head + "    routes:\n      - {match: {prefix: /}, to: [{cluster: cc}]}\n" + tail,
			`listeners[0].routes[0].to[0].cluster: unknown cluster "cc" (line 6); did you mean "c"?`},
		{"unknown field under old key", head + "    routes:\n      - {match: {prefix: /}, to: [{cluster: c}], retry: {}}\n" + tail,
			`listeners[0].routes[0].retry: unknown field (line 6)`},
		{"bad value under old key", head + "    access_log: yes\n    cluster: c\n" + tail,
			`listeners[0].access_log: unknown access log format "yes" (line 5); want one of ["off" "text" "json"]`},
		{"cluster error under old key", head + "    cluster: c\n" + tail + "    circuit_breaker:\n      open_for: -1s\n",
			"clusters[0].circuit_breaker.open_for: must be positive (line 10)"},
		{"error under new key", head + "    http:\n      routes:\n        - {match: {prefix: /}, to: [{cluster: cc}]}\n" + tail,
			`listeners[0].http.routes[0].to[0].cluster: unknown cluster "cc" (line 7); did you mean "c"?`},
		{"old key on a tcp listener", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    cluster: c\n    routes: [{match: {prefix: /}, to: [{cluster: c}]}]\n" + tail,
			"listeners[0].routes: only for protocol http (line 5)"},
		{"old key on a tcp cluster", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    cluster: c\n" + tail + "    rate_limit: {requests: 1}\n",
			"clusters[0].rate_limit: not used by tcp listeners (it limits the HTTP requests sent to the cluster) (line 8)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), noEnv)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v\nwant %s", err, tc.want)
			}
		})
	}
}
