package testenv

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// Serve accepts connections on a free loopback port, with TLS when cfg is
// not nil, and runs handle for each in its own goroutine. The listener is
// closed when the test ends. It returns the address.
func Serve(t testing.TB, cfg *tls.Config, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

// TLSEcho serves an echo over TLS with the certificate and key files given.
func TLSEcho(t testing.TB, certFile, keyFile string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, &tls.Config{Certificates: []tls.Certificate{cert}}, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
}
