//go:build !linux

package httpproxy

import (
	"io"
	"net"
)

// newRawIO is c itself where raw socket calls are not used.
func newRawIO(c net.Conn) io.ReadWriter { return c }
