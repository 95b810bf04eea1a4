package httpproxy

import (
	"net/http"
	"time"
)

// rateLimited answers a request over its route's limit in the engine
// (429, and the request ends); false when it may go.
func (c *econn) rateLimited(route *compiledRoute) bool {
	l := route.limit
	d := l.decideHead(&c.req, c.peer, c.start)
	if d.OK {
		return false
	}
	c.x.reason = reasonLimited
	msg := limitMessage(route.Name)
	head := c.req.method == http.MethodHead
	c.src.Out = l.appendLimited(c.src.Out, d, c.closeAfter, false, head, msg)
	if !head {
		c.bytesOut += int64(len(msg))
	}
	c.status = http.StatusTooManyRequests
	if c.src.Write(nil) != nil {
		c.abort()
		return true
	}
	c.finish(time.Now().UnixNano())
	return true
}
