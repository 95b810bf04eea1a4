package kubernetes

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	"github.com/attache-proxy/attache/internal/testenv/kubeenv"
)

// apiSlice is a slice with every field of k8s.io/api's type that an API
// server may send set, the ones attache does not read included.
func apiSlice() *discoveryv1.EndpointSlice {
	yes, no := ptr(true), ptr(false)
	return &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{Name: "users-abc", Namespace: "shop", ResourceVersion: "42", UID: "u-1",
			Labels:          map[string]string{discoveryv1.LabelServiceName: "users"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "users", UID: "u-0"}}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.0.0.1"},
			Conditions: discoveryv1.EndpointConditions{Ready: yes, Serving: yes, Terminating: no},
			Hostname:   ptr("users-0"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: "users-0", Namespace: "shop"},
			NodeName:   ptr("node-1"),
			Zone:       ptr("zone-a"),
			Hints:      &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-a"}}},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(8080)),
			AppProtocol: ptr("http")}},
	}
}

// wantSlice is apiSlice as this package's type.
func wantSlice() *EndpointSlice {
	yes, no := ptr(true), ptr(false)
	a := apiSlice()
	return &EndpointSlice{TypeMeta: a.TypeMeta, ObjectMeta: a.ObjectMeta, AddressType: AddressTypeIPv4,
		Endpoints: []Endpoint{{Addresses: []string{"10.0.0.1"}, Conditions: EndpointConditions{Ready: yes, Serving: yes, Terminating: no},
			Zone: ptr("zone-a"), Hints: &EndpointHints{ForZones: []ForZone{{Name: "zone-a"}}}}},
		Ports: []EndpointPort{{Name: ptr("http"), Protocol: ptr("TCP"), Port: ptr(int32(8080))}},
	}
}

// TestDecodeAPIServerJSON decodes k8s.io/api's JSON with the codec
// NewClient uses: the object comes out as *EndpointSlice with the fields
// attache reads, and the others are ignored.
func TestDecodeAPIServerJSON(t *testing.T) {
	t.Parallel()
	scheme := runtime.NewScheme()
	addToScheme(scheme)
	dec := serializer.NewCodecFactory(scheme).UniversalDeserializer()
	for _, tc := range []struct {
		name string
		in   any
		want runtime.Object
	}{
		{"slice", apiSlice(), wantSlice()},
		{"list", &discoveryv1.EndpointSliceList{TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSliceList"},
			ListMeta: metav1.ListMeta{ResourceVersion: "43"}, Items: []discoveryv1.EndpointSlice{*apiSlice()}},
			&EndpointSliceList{TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSliceList"},
				ListMeta: metav1.ListMeta{ResourceVersion: "43"}, Items: []EndpointSlice{*wantSlice()}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got, gvk, err := dec.Decode(b, nil, nil)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if gvk.GroupVersion() != GroupVersion {
				t.Errorf("group version: got %v, want %v", gvk.GroupVersion(), GroupVersion)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestDeepCopySharesNothing: the informer hands out copies; changing every
// field of a copy leaves the original as it was.
func TestDeepCopySharesNothing(t *testing.T) {
	t.Parallel()
	orig := &EndpointSliceList{Items: []EndpointSlice{*wantSlice()}}
	cp := orig.DeepCopyObject().(*EndpointSliceList)
	if !reflect.DeepEqual(cp, orig) {
		t.Fatalf("copy: got %+v, want %+v", cp, orig)
	}
	es := &cp.Items[0]
	es.Labels["x"] = "y"
	es.Endpoints[0].Addresses[0] = "10.9.9.9"
	*es.Endpoints[0].Conditions.Ready = false
	*es.Endpoints[0].Conditions.Serving = false
	*es.Endpoints[0].Conditions.Terminating = true
	*es.Endpoints[0].Zone = "zone-b"
	es.Endpoints[0].Hints.ForZones[0].Name = "zone-b"
	*es.Ports[0].Name, *es.Ports[0].Protocol, *es.Ports[0].Port = "grpc", "UDP", 1
	es.OwnerReferences[0].Name = "other"
	if want := wantSlice(); !reflect.DeepEqual(&orig.Items[0], want) {
		t.Errorf("original after changing the copy: got %+v, want %+v", orig.Items[0], *want)
	}
	if es2 := wantSlice().DeepCopyObject().(*EndpointSlice); !reflect.DeepEqual(es2, wantSlice()) {
		t.Errorf("slice copy: got %+v, want %+v", es2, wantSlice())
	}
}

// TestAgainstAPIServer runs discovery through NewClient and Scoped against
// a real API server: lists and watch events decode into this package's
// types, and an update is followed.
func TestAgainstAPIServer(t *testing.T) {
	t.Parallel()
	k := kubeenv.Start(t)
	const ns = "attache-discovery-types"
	k.Namespace(t, ns)
	client, err := NewClient(k.Kubeconfig(t, t.TempDir(), ""))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	api := k.Client.DiscoveryV1().EndpointSlices(ns)
	es := apiSlice()
	es.TypeMeta, es.Namespace, es.ResourceVersion, es.UID, es.OwnerReferences = metav1.TypeMeta{}, ns, "", "", nil
	es.Endpoints[0].TargetRef.Namespace = ns
	if es, err = api.Create(ctx, es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	updates := run(t, &EndpointSlices{ListWatch: Scoped(client, ns, "users"), Namespace: ns, Service: "users", Port: "http"})
	next(t, updates, "10.0.0.1:8080")

	es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0.2"}})
	if _, err := api.Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	next(t, updates, "10.0.0.1:8080", "10.0.0.2:8080")
	if err := api.Delete(ctx, es.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	next(t, updates)
}
