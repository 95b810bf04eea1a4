package httpproxy

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/net/http/httpguts"

	"github.com/attache-proxy/attache/internal/balance"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/grpcjson/grpcjsontest"
	"github.com/attache-proxy/attache/internal/jwtauth/jwttest"
	"github.com/attache-proxy/attache/internal/metrics"
	"github.com/attache-proxy/attache/internal/protocol"
	"github.com/attache-proxy/attache/internal/upstream"
)

// policyListener builds listener l of the configuration yaml as attache
// does (Protocol.NewCluster for every cluster, then NewListener), so that
// what the routes are bound to after the table is compiled (JWT checks,
// transcoders, carried caches and limits) is there too.
func policyListener(t *testing.T, yaml string) *instance {
	t.Helper()
	c, err := config.Parse([]byte(yaml), func(string) (string, bool) { return "", false }, []config.Schema{&Protocol{}})
	if err != nil {
		t.Fatal(err)
	}
	p := &Protocol{}
	proc := &protocol.Process{Log: slog.New(slog.DiscardHandler), Metrics: metrics.New()}
	if err := p.Open(proc); err != nil {
		t.Fatal(err)
	}
	clusters := map[string]*protocol.Cluster{}
	for _, cc := range c.Clusters {
		pk, err := balance.New("round_robin")
		if err != nil {
			t.Fatal(err)
		}
		up := upstream.New(upstream.Options{Name: cc.Name, Picker: pk, ConnectTimeout: time.Second})
		pc := &protocol.Cluster{Config: cc, Upstream: up, Instances: map[string]protocol.Instance{}}
		inst, err := p.NewCluster(&protocol.Env{Process: proc, Config: c, Cluster: pc, Log: proc.Log})
		if err != nil {
			t.Fatal(err)
		}
		pc.Instances["http"] = inst
		clusters[cc.Name] = pc
		t.Cleanup(func() { inst.Stop(nil, c, c) })
	}
	l, err := p.NewListener(&protocol.Env{Process: proc, Config: c, Listener: &c.Listeners[0], Log: proc.Log,
		Clusters: func(name string) *protocol.Cluster { return clusters[name] }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l.(*instance)
}

// TestPolicyRoutesOffFastPath: a route with a policy that only net/http
// applies (a JWT check, a response cache, transcoding, a rate limit keyed
// on a claim or sending its fields always, a cluster with a rate limit)
// is never served by the engine or the goroutine fast path, which would
// skip it; routes whose policy the fast paths apply (a limit keyed on
// nothing, a header or the end user) and plain routes stay on them.
func TestPolicyRoutesOffFastPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	jwks := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwks, jwttest.JWKS(jwttest.NewKey("k", jose.EdDSA)), 0o644); err != nil {
		t.Fatal(err)
	}
	desc := grpcjsontest.WriteSet(t, grpcjsontest.LibrarySet(t))
	routes := []struct {
		name, spec string
		fast       bool
	}{
		{"plain", `to: [{cluster: a}]`, true},
		{"limit", `to: [{cluster: a}], rate_limit: {requests: 5}`, true},
		{"limit-header", `to: [{cluster: a}], rate_limit: {requests: 5, key: {header: x-api-key}}`, true},
		{"limit-end-user", `to: [{cluster: a}], rate_limit: {requests: 5, key: {end_user: true}}`, true},
		{"limit-always", `to: [{cluster: a}], rate_limit: {requests: 5, headers: always}`, false},
		{"limit-claim", `to: [{cluster: a}], jwt: {provider: p}, rate_limit: {requests: 5, key: {claim: sub}}`, false},
		{"jwt", `to: [{cluster: a}], jwt: {provider: p}`, false},
		{"jwt-allow-missing", `to: [{cluster: a}], jwt: {provider: p, allow_missing: true}`, false},
		{"cache", `to: [{cluster: a}], cache: {}`, false},
		{"transcode", fmt.Sprintf(`to: [{cluster: grpc}], grpc_transcode: {descriptor_set_file: %q, services: [test.library.v1.Library]}`, desc), false},
		{"upstream-limit", `to: [{cluster: limited}]`, false},
		{"split-upstream-limit", `to: [{cluster: a, weight: 99}, {cluster: limited, weight: 1}]`, false},
		{"h2c", `to: [{cluster: grpc}]`, false},
	}
	yaml := "listeners:\n  - name: l\n    address: \"127.0.0.1:0\"\n    protocol: http\n" +
		fmt.Sprintf("    jwt_providers: [{name: p, jwks: {file: %q}}]\n", jwks) + "    routes:\n"
	for _, r := range routes {
		yaml += fmt.Sprintf("      - {name: %s, match: {prefix: /%s/}, %s}\n", r.name, r.name, r.spec)
	}
	yaml += `clusters:
  - {name: a, endpoints: ["127.0.0.1:1"]}
  - {name: limited, endpoints: ["127.0.0.1:2"], rate_limit: {requests: 5, queue: {}}}
  - {name: grpc, endpoints: ["127.0.0.1:3"], http: {version: h2c}}
`
	l := policyListener(t, yaml)
	for i, r := range routes {
		got := l.handler.table.Routes[i]
		if got.Name != r.name {
			t.Fatalf("route %d is %q, want %q", i, got.Name, r.name)
		}
		if got.fast != r.fast {
			t.Errorf("route %s: fast %v, want %v", r.name, got.fast, r.fast)
		}
	}
}

// TestJWTClaimHeaderInjection: a claim whose value no header may carry
// (CR, LF, NUL, DEL) is left out, and the request's own copy of the
// header is removed all the same, so a token cannot add a header or
// split the request, nor one the upstream would read as another (spaces
// at its ends, which recipients trim; a list element with a comma, which
// would read as two); non-ASCII text (UTF-8, field-value obs-text) goes
// as it is, and whatever is set passes net/http's own field check.
func TestJWTClaimHeaderInjection(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		claim any
		want  string
		ok    bool
	}{
		{"alice\r\nX-Admin: 1", "", false},
		{"alice\nX-Admin: 1", "", false},
		{"a\x00b", "", false},
		{"a\x7fb", "", false},
		{[]any{"a", "b\r\nc"}, "", false},
		{map[string]any{"k": "v\r\n"}, `{"k":"v\r\n"}`, true}, // JSON escapes it
		{" admin", "", false},                                 // the upstream would read "admin"
		{"admin\t", "", false},
		{[]any{"readers,admins"}, "", false}, // would read as two groups
		{[]any{"a", " admin"}, "", false},
		{[]any{"a", "b"}, "a,b", true},
		{"Smith, John", "Smith, John", true},
		{"Zoë", "Zoë", true},
		{"a\tb", "a\tb", true},
	} {
		v, ok := claimValue(map[string]any{"name": c.claim}, "name")
		if ok != c.ok || ok && v != c.want {
			t.Errorf("claim %q: got %q %v, want %q %v", c.claim, v, ok, c.want, c.ok)
		}
		if ok && !httpguts.ValidHeaderFieldValue(v) {
			t.Errorf("claim %q: %q is not a valid field value", c.claim, v)
		}
	}
}

// FuzzClaimValue: whatever a verified token's payload holds, a claim
// forwarded as a header is a valid field value, or is left out.
func FuzzClaimValue(f *testing.F) {
	for _, s := range []string{`{"sub":"alice"}`, `{"sub":"a\r\nb"}`, `{"sub":["a","b"]}`, `{"sub":{"x":[1,"\u0000"]}}`, `{"sub":1e300}`, `{"sub":"Zo\u00eb"}`} {
		f.Add(s, "sub")
	}
	f.Add(`{"realm":{"roles":["a"]}}`, "realm.roles")
	f.Fuzz(func(t *testing.T, payload, name string) {
		var claims map[string]any
		if json.Unmarshal([]byte(payload), &claims) != nil {
			return
		}
		if v, ok := claimValue(claims, name); ok && !httpguts.ValidHeaderFieldValue(v) {
			t.Fatalf("claim %q of %s: %q is not a valid field value", name, payload, v)
		}
		claimKey(claims, name)
	})
}
