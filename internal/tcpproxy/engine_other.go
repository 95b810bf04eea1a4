//go:build !linux

package tcpproxy

import (
	"errors"
	"net"
	"time"

	"github.com/attache-proxy/attache/internal/evloop"
)

// Engine is the epoll fast path; elsewhere than Linux every connection uses
// Pipe.
type Engine struct{}

// Pair is one proxied connection inside an Engine.
type Pair struct{}

var errNoEngine = errors.New("no epoll engine on this platform")

// NewEngine: there are no loops on this platform (evloop.Group.Loops is
// empty), so it is never called.
func NewEngine(*evloop.Loop) *Engine { return &Engine{} }

// Add fails.
func (e *Engine) Add(client, up net.Conn, idle time.Duration, cnt Counters) (*Pair, error) {
	return nil, errNoEngine
}

// Close does nothing.
func (e *Engine) Close() {}

// Done is never closed.
func (p *Pair) Done() <-chan struct{} { return nil }

// Close does nothing.
func (p *Pair) Close() error { return nil }
