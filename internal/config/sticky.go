package config

import (
	"fmt"
	"strings"
)

// applySticky fills the defaults of every sticky split: loopback as the
// trusted proxies, X-Forwarded-For as the header, and the pod's own
// identity as the key of a request without a user identity (POD_NAME from
// the downward API, else the host name, which in a pod is the pod's name).
func (c *Config) applySticky(lookupEnv func(string) (string, bool), hostname func() (string, error)) {
	var pod string
	resolved := false
	for i := range c.Listeners {
		for j := range c.Listeners[i].Routes {
			s := c.Listeners[i].Routes[j].Sticky
			if s == nil {
				continue
			}
			p := fmt.Sprintf("listeners[%d].routes[%d].sticky", i, j)
			if s.TrustedProxies == nil && !c.has(p+".trusted_proxies") {
				s.TrustedProxies = DefaultTrustedProxies()
			}
			if s.ForwardedHeader == "" {
				s.ForwardedHeader = DefaultForwardedHeader
			}
			if s.PodKey != "" || c.has(p+".pod_key") {
				continue
			}
			if !resolved {
				resolved = true
				if lookupEnv != nil {
					pod, _ = lookupEnv("POD_NAME")
					pod = strings.TrimSpace(pod)
				}
				if pod == "" && hostname != nil {
					pod, _ = hostname()
				}
			}
			s.PodKey = pod
		}
	}
}

// sticky validates a route's sticky block at path p.
func (v *validator) sticky(p string, s *Sticky) {
	v.oneOf(p+".by", "sticky key", s.By, stickyBy)
	if (s.By == "header" || s.By == "cookie") && s.Name == "" {
		v.errorf(p+".name", "required with by: %s", s.By)
	}
	if !tokenPattern.MatchString(s.ForwardedHeader) {
		v.errorf(p+".forwarded_header", "%q: not a valid header name", s.ForwardedHeader)
	}
	switch {
	case s.PodKey == "":
		v.errorf(p+".pod_key", "empty: no POD_NAME in the environment and no host name; set pod_key (the key of requests without a user identity)")
	case !validHeaderValue(s.PodKey):
		v.errorf(p+".pod_key", "holds a control character")
	case len(s.PodKey) > 253:
		v.errorf(p+".pod_key", "longer than 253 bytes")
	}
	for i, a := range s.TrustedProxies {
		for _, b := range s.TrustedProxies[:i] {
			if b.Prefix().Overlaps(a.Prefix()) {
				v.errorf(fmt.Sprintf("%s.trusted_proxies[%d]", p, i), "%s overlaps %s, listed before it", a, b)
				break
			}
		}
	}
}
