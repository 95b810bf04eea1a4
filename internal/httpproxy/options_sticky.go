package httpproxy

import (
	"fmt"
	"strings"

	"github.com/attache-proxy/attache/internal/config"
)

// applySticky fills the defaults of a sticky split at p: loopback as the
// trusted proxies, X-Forwarded-For as the header, and the pod's own
// identity as the key of a request without a user identity (POD_NAME from
// the downward API, else the host name, which in a pod is the pod's name).
func applySticky(c *config.Check, p string, s *Sticky, hostname func() (string, error)) {
	if s.TrustedProxies == nil && !c.Has(p+".trusted_proxies") {
		s.TrustedProxies = DefaultTrustedProxies()
	}
	if s.ForwardedHeader == "" {
		s.ForwardedHeader = DefaultForwardedHeader
	}
	if s.PodKey != "" || c.Has(p+".pod_key") {
		return
	}
	pod, _ := c.LookupEnv("POD_NAME")
	pod = strings.TrimSpace(pod)
	if pod == "" && hostname != nil {
		pod, _ = hostname()
	}
	s.PodKey = pod
}

// sticky validates a route's sticky block at path p.
func validateSticky(c *config.Check, p string, s *Sticky) {
	c.OneOf(p+".by", "sticky key", s.By, stickyBy)
	if (s.By == "header" || s.By == "cookie") && s.Name == "" {
		c.Errorf(p+".name", "required with by: %s", s.By)
	}
	if !config.ValidHeaderName(s.ForwardedHeader) {
		c.Errorf(p+".forwarded_header", "%q: not a valid header name", s.ForwardedHeader)
	}
	switch {
	case s.PodKey == "":
		c.Errorf(p+".pod_key", "empty: no POD_NAME in the environment and no host name; set pod_key (the key of requests without a user identity)")
	case !config.ValidHeaderValue(s.PodKey):
		c.Errorf(p+".pod_key", "holds a control character")
	case len(s.PodKey) > 253:
		c.Errorf(p+".pod_key", "longer than 253 bytes")
	}
	for i, a := range s.TrustedProxies {
		for _, b := range s.TrustedProxies[:i] {
			if b.Prefix().Overlaps(a.Prefix()) {
				c.Errorf(fmt.Sprintf("%s.trusted_proxies[%d]", p, i), "%s overlaps %s, listed before it", a, b)
				break
			}
		}
	}
}
