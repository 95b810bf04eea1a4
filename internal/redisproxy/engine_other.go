//go:build !linux

package redisproxy

import (
	"net"

	"github.com/attache-proxy/attache/internal/evloop"
)

// engine is the epoll fast path; elsewhere than Linux there are no loops
// (evloop.Group.Loops is empty) and every client is served by goroutines.
type engine struct{ done chan struct{} }

func newEngine(*Pool, *evloop.Loop) *engine { return &engine{} }

func (e *engine) serve(*Handler, int, net.Conn) bool { return false }

func (e *engine) stop() {}

func (e *engine) moveClients() {}

func (e *engine) drop(*server) {}
