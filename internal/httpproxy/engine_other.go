//go:build !linux

package httpproxy

import (
	"log/slog"
	"net"
	"time"

	"github.com/attache-proxy/attache/internal/evloop"
)

// engines: there is no event-loop engine without epoll; the goroutine
// fast path serves.
type engines struct{}

func newEngines(*Server, *evloop.Group, *slog.Logger) *engines { return nil }

func (*engines) serve(c net.Conn) (net.Conn, []byte, time.Time, bool) {
	return c, nil, time.Time{}, false
}
func (*engines) closeIdle(bool) int { return 0 }
func (*engines) stop()              {}
