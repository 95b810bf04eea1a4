//go:build !linux

package pgproxy

import (
	"time"

	"github.com/attache-proxy/attache/internal/evloop"
)

// engine is Linux-only (internal/evloop); elsewhere every client is
// served by goroutines.
type engine struct{}

type eclient struct{}

func newEngines(*Proxy, []*evloop.Loop) []*engine { return nil }
func (*engine) serve(*client) bool                { return false }
func (*engine) stop()                             {}
func (*eclient) dropServer(*server)               {}
func (*eclient) closeClient()                     {}
func (*eclient) engine() *engine                  { return nil }
func (*engine) now() time.Time                    { return time.Now() }
