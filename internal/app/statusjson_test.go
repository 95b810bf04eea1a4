package app

import (
	"encoding/json"
	"testing"

	"github.com/attache-proxy/attache/internal/protocol"
)

// TestStatusJSONFieldOrder: the fields protocols add to /status entries
// sit where they always have: a cluster's after balance, a listener's at
// the end.
func TestStatusJSONFieldOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"cluster", ClusterStatus{Name: "c", Balance: "p2c", Endpoints: []EndpointStatus{},
			ProtocolStatus: protocol.Status{{Key: "circuit_breaker", Value: "open"}, {Key: "redis_shards", Value: []int{1}}}},
			`{"name":"c","balance":"p2c","circuit_breaker":"open","redis_shards":[1],"endpoints":[]}`},
		{"cluster without protocol fields", ClusterStatus{Name: "c", Balance: "p2c", Discovery: &DiscoveryStatus{Source: "dns"}},
			`{"name":"c","balance":"p2c","discovery":{"source":"dns","stale":false},"endpoints":null}`},
		{"listener", ListenerStatus{Name: "l", Address: "a", Protocol: "postgres", Cluster: "c", ActiveConnections: 2,
			ProtocolStatus: protocol.Status{{Key: "postgres_pools", Value: []string{"<p>"}}}},
			`{"name":"l","address":"a","protocol":"postgres","cluster":"c","tls":false,"active_connections":2,"postgres_pools":["\u003cp\u003e"]}`},
		{"listener without protocol fields", ListenerStatus{Name: "l"},
			`{"name":"l","address":"","protocol":"","cluster":"","tls":false,"active_connections":0}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
}
