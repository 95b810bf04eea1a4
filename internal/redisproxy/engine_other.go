//go:build !linux

package redisproxy

import "net"

// engine is the epoll fast path; elsewhere than Linux every client is
// served by goroutines.
type engine struct{ done chan struct{} }

func newEngine(*Pool) (*engine, error) { return nil, errNoEngine }

func (e *engine) serve(*Handler, int, net.Conn) bool { return false }

func (e *engine) stop() {}

func (e *engine) moveClients() {}
