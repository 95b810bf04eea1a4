//go:build !linux

package pgproxy

import (
	"io"
	"net"
)

// newRawReader and newRawWriter are c itself where raw socket calls are
// not used.
func newRawReader(c net.Conn) io.Reader { return c }
func newRawWriter(c net.Conn) io.Writer { return c }
