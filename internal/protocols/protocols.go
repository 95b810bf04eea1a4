// Package protocols is the list of the protocols attache serves: the one
// place that names them all. A new protocol is its folder (with a
// protocol.Protocol) and one line here.
//
// The list is a function, not a registry filled by init functions (as
// CoreDNS and Caddy do): attache has no package globals, and a Protocol
// holds per-process state (its event loops), so each App gets its own.
package protocols

import (
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/httpproxy"
	"github.com/attache-proxy/attache/internal/memcacheproxy"
	"github.com/attache-proxy/attache/internal/pgproxy"
	"github.com/attache-proxy/attache/internal/protocol"
	"github.com/attache-proxy/attache/internal/redisproxy"
	"github.com/attache-proxy/attache/internal/tcpproxy"
)

// New returns one of each protocol, in the order their fields appear in
// /status.
func New() []protocol.Protocol {
	return []protocol.Protocol{
		&tcpproxy.Protocol{},
		&httpproxy.Protocol{},
		&redisproxy.Protocol{},
		&pgproxy.Protocol{},
		&memcacheproxy.Protocol{},
	}
}

// Schemas are the protocols' names and options, for config.Parse and
// config.Load.
func Schemas() []config.Schema {
	return SchemasOf(New())
}

// SchemasOf are the schemas of protocols.
func SchemasOf(ps []protocol.Protocol) []config.Schema {
	out := make([]config.Schema, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out
}
