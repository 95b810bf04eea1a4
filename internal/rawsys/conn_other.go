//go:build !linux

package rawsys

import (
	"io"
	"net"
)

// NewReader and NewWriter are c itself where raw socket calls are not
// used.
func NewReader(c net.Conn) io.Reader { return c }
func NewWriter(c net.Conn) io.Writer { return c }
