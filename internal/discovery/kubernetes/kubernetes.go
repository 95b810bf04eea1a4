// Package kubernetes discovers a cluster's endpoints from the EndpointSlices
// of one Kubernetes Service, with a client-go informer scoped to the
// Service's namespace and to its slices (label kubernetes.io/service-name):
// attache never watches the whole cluster, so a Role allowing get, list and
// watch on endpointslices in that namespace is all it needs.
//
// It is a subpackage of discovery so that client-go is linked only where
// this source is used.
package kubernetes

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/attache-proxy/attache/internal/discovery"
	"github.com/attache-proxy/attache/internal/upstream"
)

// EndpointSlices reports the endpoints of Service in Namespace that are
// ready to take traffic: ready and serving, not terminating. Port is the
// slice port's name, or its number (the pods' port, not the Service's: the
// traffic goes to the pods, not through the Service's virtual IP).
//
// An endpoint that starts terminating leaves the set at once, so it gets no
// new connections or requests, while the connections open to it continue
// until they end on their own (upstream.Cluster.SetEndpoints never closes
// them): a rolling update drains rather than cuts.
//
// Until the informer's first list succeeds nothing is reported; afterwards
// the informer's cache keeps the last known slices while the API server is
// unreachable, so an outage of the control plane does not empty the cluster.
type EndpointSlices struct {
	// ListWatch lists and watches the Service's slices: Scoped in
	// production, anything (a fake clientset) in tests.
	ListWatch cache.ListerWatcher
	Namespace string // for logs
	Service   string
	Port      string
	Log       *slog.Logger
	// Report, if set, is told of each failed list or watch and, with nil,
	// of each endpoint set taken from the informer's cache (the cache is
	// good again once it delivers events).
	Report func(error)
}

var _ discovery.Discoverer = (*EndpointSlices)(nil)

// NewClient returns a REST client for the discovery.k8s.io/v1 API of the API
// server of kubeconfig, or of the pod's own API server (service-account
// token and CA, re-read by client-go when the kubelet rotates them) when
// kubeconfig is "". It knows only this package's EndpointSlice types (see
// types.go), decoded from JSON: the whole client-go clientset and its
// scheme of every API group would triple the size of the attache binary,
// and even k8s.io/api's discovery/v1 types would add 3.5 MB to it.
func NewClient(kubeconfig string) (*rest.RESTClient, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	addToScheme(scheme)
	cfg.UserAgent = "attache"
	cfg.APIPath = "/apis"
	gv := GroupVersion
	cfg.GroupVersion = &gv
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	return rest.RESTClientFor(cfg)
}

// Scoped lists and watches, through client (see NewClient), only the
// EndpointSlices of service in namespace.
func Scoped(client cache.Getter, namespace, service string) cache.ListerWatcher {
	return cache.NewFilteredListWatchFromClient(client, "endpointslices", namespace, func(o *metav1.ListOptions) {
		o.LabelSelector = LabelServiceName + "=" + service
	})
}

// Run watches the Service's EndpointSlices until ctx ends.
func (s *EndpointSlices) Run(ctx context.Context, update func([]upstream.Target)) {
	log := s.Log.With("namespace", s.Namespace, "service", s.Service)
	inf := cache.NewSharedIndexInformer(s.ListWatch, &EndpointSlice{}, 0, cache.Indexers{})
	// The informer's own error reporting goes to klog; ours goes to the
	// cluster's log. The reflector retries with back-off either way.
	inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() == nil {
			log.Warn("kubernetes discovery: list/watch of endpointslices failed; keeping the last endpoints", "error", err)
			s.report(err)
		}
	})
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	})
	go inf.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return
	}
	var last []upstream.Target
	for first := true; ; first = false {
		var eps []*EndpointSlice
		for _, o := range inf.GetStore().List() {
			// The API server filters by label; checking again costs
			// nothing and holds for any client (the fake's watch does not).
			if es, ok := o.(*EndpointSlice); ok && es.Labels[LabelServiceName] == s.Service {
				eps = append(eps, es)
			}
		}
		ts := Targets(eps, s.Port)
		s.report(nil)
		if first || !slices.Equal(ts, last) {
			log.Info("kubernetes discovery", "slices", len(eps), "endpoints", len(ts))
			last = ts
			update(ts)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

func (s *EndpointSlices) report(err error) {
	if s.Report != nil {
		s.Report(err)
	}
}

// Targets returns the endpoints of slices that take traffic on port (a name
// or a number), sorted by address and without duplicates (an endpoint may be
// in two slices while the controller moves it), with their zone and
// topology hints. A slice without that port
// contributes nothing; FQDN slices are skipped (attache dials addresses).
func Targets(eps []*EndpointSlice, port string) []upstream.Target {
	var ts []upstream.Target
	for _, es := range eps {
		if es.AddressType != AddressTypeIPv4 && es.AddressType != AddressTypeIPv6 {
			continue
		}
		p, ok := slicePort(es, port)
		if !ok {
			continue
		}
		for _, e := range es.Endpoints {
			if !takesTraffic(e.Conditions) || len(e.Addresses) == 0 {
				continue
			}
			// Only the first address has a meaning (the API says so, and
			// kube-proxy reads no other).
			ip, err := netip.ParseAddr(e.Addresses[0])
			if err != nil {
				continue
			}
			ts = append(ts, upstream.Target{Addr: net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(p)), Weight: 1,
				Zone: deref(e.Zone), Hints: hints(e.Hints)})
		}
	}
	slices.SortFunc(ts, func(a, b upstream.Target) int { return strings.Compare(a.Addr, b.Addr) })
	return slices.CompactFunc(ts, func(a, b upstream.Target) bool { return a.Addr == b.Addr })
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// hints returns the zones of h sorted and joined by commas, as
// upstream.Target holds them; "" for none.
func hints(h *EndpointHints) string {
	if h == nil || len(h.ForZones) == 0 {
		return ""
	}
	zs := make([]string, 0, len(h.ForZones))
	for _, z := range h.ForZones {
		if z.Name != "" && !strings.Contains(z.Name, ",") {
			zs = append(zs, z.Name)
		}
	}
	slices.Sort(zs)
	return strings.Join(slices.Compact(zs), ",")
}

// slicePort finds the TCP port of es named (or numbered) port.
func slicePort(es *EndpointSlice, port string) (int, bool) {
	num, err := strconv.Atoi(port)
	byNumber := err == nil
	for _, p := range es.Ports {
		if p.Port == nil || p.Protocol != nil && *p.Protocol != "TCP" {
			continue
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if byNumber && int(*p.Port) == num || !byNumber && name == port {
			return int(*p.Port), true
		}
	}
	return 0, false
}

// takesTraffic: ready and serving (nil means true, as the API defines) and
// not terminating. A terminating endpoint may still be serving; it is left
// out so that it drains.
func takesTraffic(c EndpointConditions) bool {
	isTrue := func(b *bool, unset bool) bool {
		if b == nil {
			return unset
		}
		return *b
	}
	return isTrue(c.Ready, true) && isTrue(c.Serving, true) && !isTrue(c.Terminating, false)
}
