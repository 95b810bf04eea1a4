package httpproxy

import "io"

// outWriter is under an app connection's bufio.Writer: when tail is set,
// the next flush sends the buffered bytes and tail together (one sendmsg
// on Linux), so that a large body waiting in the upstream connection's
// buffer goes out without being copied into the writer's.
type outWriter struct {
	w     io.Writer
	tail  []byte
	tailN int // bytes of tail written by the last flush
}

// vecWriter writes two buffers in one call (rawsys.Writer).
type vecWriter interface {
	Writev(a, b []byte) (int, error)
}

func (o *outWriter) Write(p []byte) (int, error) {
	if o.tail == nil {
		return o.w.Write(p)
	}
	tail := o.tail
	o.tail = nil
	var n int
	var err error
	if v, ok := o.w.(vecWriter); ok {
		n, err = v.Writev(p, tail)
	} else if n, err = o.w.Write(p); err == nil {
		var m int
		m, err = o.w.Write(tail)
		n += m
	}
	o.tailN = max(n-len(p), 0)
	return min(n, len(p)), err
}
