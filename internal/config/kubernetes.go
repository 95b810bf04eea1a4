package config

import (
	"regexp"
	"strconv"
)

// Kubernetes object names as the API server validates them: a Service name
// is a DNS-1035 label, a namespace and an EndpointSlice port name DNS-1123
// labels. Checking here turns a typo into a config error instead of a watch
// that never sees an endpoint.
var (
	dns1035Label = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	digits       = regexp.MustCompile(`^[0-9]+$`)
)

func (v *validator) kubernetesDiscovery(p string, k *KubernetesDiscovery) {
	switch {
	case k.Service == "":
		v.errorf(p+".service", "required")
	case len(k.Service) > 63 || !dns1035Label.MatchString(k.Service):
		v.errorf(p+".service", "%q is not a Service name (lower-case letters, digits and '-', starting with a letter, at most 63)", k.Service)
	}
	switch {
	case k.Namespace == "":
		v.errorf(p+".namespace", "required")
	case len(k.Namespace) > 63 || !dns1123Label.MatchString(k.Namespace):
		v.errorf(p+".namespace", "%q is not a namespace name (lower-case letters, digits and '-', at most 63)", k.Namespace)
	}
	switch {
	case k.Port == "":
		v.errorf(p+".port", "required (the EndpointSlice port's name, or its number)")
	case digits.MatchString(k.Port):
		if n, err := strconv.Atoi(k.Port); err != nil || n < 1 || n > 65535 {
			v.errorf(p+".port", "must be 1-65535")
		}
	case len(k.Port) > 63 || !dns1123Label.MatchString(k.Port):
		v.errorf(p+".port", "%q is not a port name (lower-case letters, digits and '-', at most 63) or number", k.Port)
	}
	v.file(p+".kubeconfig", k.Kubeconfig)
}
