package kubernetes

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The discovery.k8s.io/v1 types attache reads, with only the fields it uses.
// They decode the API server's JSON like k8s.io/api/discovery/v1's types
// (same names, same tags; unknown fields are ignored) but link none of
// k8s.io/api: its core/v1, which discovery/v1 imports, alone adds about
// 2 MB of code and init-time work to every attache process, the idle
// resident set included (see docs/http.md, "Memory"). The informer's cache
// holds these trimmed objects, so it also keeps less per slice.

// GroupVersion is discovery.k8s.io/v1.
var GroupVersion = schema.GroupVersion{Group: "discovery.k8s.io", Version: "v1"}

// LabelServiceName is the label naming an EndpointSlice's Service.
const LabelServiceName = "kubernetes.io/service-name"

// AddressType values of an EndpointSlice.
const (
	AddressTypeIPv4 = "IPv4"
	AddressTypeIPv6 = "IPv6"
	AddressTypeFQDN = "FQDN"
)

// EndpointSlice is a subset of a Service's endpoints.
type EndpointSlice struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// AddressType is IPv4, IPv6 or FQDN.
	AddressType string         `json:"addressType"`
	Endpoints   []Endpoint     `json:"endpoints"`
	Ports       []EndpointPort `json:"ports"`
}

// Endpoint is one backend of a slice.
type Endpoint struct {
	// Addresses: only the first has a meaning.
	Addresses  []string           `json:"addresses"`
	Conditions EndpointConditions `json:"conditions,omitempty"`
	// Zone is the zone of the endpoint's node.
	Zone *string `json:"zone,omitempty"`
	// Hints are topology aware routing's: the zones that should use it.
	Hints *EndpointHints `json:"hints,omitempty"`
}

// EndpointHints says where an endpoint should be used.
type EndpointHints struct {
	ForZones []ForZone `json:"forZones,omitempty"`
}

// ForZone names one zone.
type ForZone struct {
	Name string `json:"name"`
}

// EndpointConditions: nil Ready and Serving mean true, nil Terminating
// false.
type EndpointConditions struct {
	Ready       *bool `json:"ready,omitempty"`
	Serving     *bool `json:"serving,omitempty"`
	Terminating *bool `json:"terminating,omitempty"`
}

// EndpointPort is a port of every endpoint of a slice. Nil Protocol means
// TCP; nil Port means all ports (attache takes no such port).
type EndpointPort struct {
	Name     *string `json:"name,omitempty"`
	Protocol *string `json:"protocol,omitempty"`
	Port     *int32  `json:"port,omitempty"`
}

// EndpointSliceList is the answer to a list.
type EndpointSliceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EndpointSlice `json:"items"`
}

var (
	_ runtime.Object = (*EndpointSlice)(nil)
	_ runtime.Object = (*EndpointSliceList)(nil)
)

// addToScheme registers the types under GroupVersion, with the meta/v1
// types (ListOptions, WatchEvent, Status) a REST client and its watches
// need.
func addToScheme(s *runtime.Scheme) {
	s.AddKnownTypes(GroupVersion, &EndpointSlice{}, &EndpointSliceList{})
	metav1.AddToGroupVersion(s, GroupVersion)
}

// DeepCopyObject returns a copy sharing nothing with es.
func (es *EndpointSlice) DeepCopyObject() runtime.Object {
	if es == nil {
		return nil
	}
	return es.DeepCopy()
}

// DeepCopy returns a copy sharing nothing with es.
func (es *EndpointSlice) DeepCopy() *EndpointSlice {
	if es == nil {
		return nil
	}
	out := new(EndpointSlice)
	es.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies es into out, sharing nothing.
func (es *EndpointSlice) DeepCopyInto(out *EndpointSlice) {
	out.TypeMeta = es.TypeMeta
	es.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.AddressType = es.AddressType
	out.Endpoints = nil
	if es.Endpoints != nil {
		out.Endpoints = make([]Endpoint, len(es.Endpoints))
		for i, e := range es.Endpoints {
			out.Endpoints[i] = Endpoint{
				Addresses: cloneSlice(e.Addresses),
				Conditions: EndpointConditions{
					Ready:       clonePtr(e.Conditions.Ready),
					Serving:     clonePtr(e.Conditions.Serving),
					Terminating: clonePtr(e.Conditions.Terminating),
				},
				Zone: clonePtr(e.Zone),
			}
			if e.Hints != nil {
				out.Endpoints[i].Hints = &EndpointHints{ForZones: cloneSlice(e.Hints.ForZones)}
			}
		}
	}
	out.Ports = nil
	if es.Ports != nil {
		out.Ports = make([]EndpointPort, len(es.Ports))
		for i, p := range es.Ports {
			out.Ports[i] = EndpointPort{Name: clonePtr(p.Name), Protocol: clonePtr(p.Protocol), Port: clonePtr(p.Port)}
		}
	}
}

// DeepCopyObject returns a copy sharing nothing with l.
func (l *EndpointSliceList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := &EndpointSliceList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]EndpointSlice, len(l.Items))
		for i := range l.Items {
			l.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
	return out
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// cloneSlice is slices.Clone that keeps nil and empty apart, as
// generated deep copies do.
func cloneSlice[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}
