// Package grpcjson transcodes REST/JSON requests to gRPC calls and their
// answers back to JSON, as Envoy's grpc_json_transcoder and grpc-gateway
// do: methods are bound to HTTP methods and path templates by their
// google.api.http annotations (HttpRule) in a FileDescriptorSet, request
// messages are built from the path's variables, the query and the JSON
// body, and response messages are written as JSON with protojson.
//
// A Transcoder is built once per configuration (New, Load) and is
// immutable and safe for concurrent use. It knows nothing of sockets: the
// caller matches a request (Match), builds the framed gRPC request
// (Binding.Request) and turns the upstream's response into the answer
// (Binding.Response).
package grpcjson

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Options configure a Transcoder. Zero values take the defaults noted.
type Options struct {
	// Services are the fully qualified names of the services to bind
	// (pkg.Service); each must be in the descriptor set.
	Services []string
	// MaxRequestBytes bounds a request's JSON body (default 1 MiB); a
	// larger one is refused with 413.
	MaxRequestBytes int64
	// MaxMessageBytes bounds one gRPC response message (default 4 MiB,
	// gRPC's default); a larger one fails the response (502).
	MaxMessageBytes int
	// Print is how JSON is written.
	Print PrintOptions
}

// PrintOptions are protojson's marshal options that attache exposes.
// grpc-gateway's default marshaler is UseProtoNames false (lowerCamelCase
// names), EmitUnpopulated true, UseEnumNumbers false, no indentation.
type PrintOptions struct {
	UseProtoNames   bool
	EmitUnpopulated bool
	UseEnumNumbers  bool
	Multiline       bool // two-space indentation
}

// Defaults.
const (
	DefaultMaxRequestBytes = 1 << 20
	DefaultMaxMessageBytes = 4 << 20
)

// FieldError is a configuration problem: Field is relative to the
// transcoding block ("descriptors", "services[1]").
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Errors is every problem New found.
type Errors []*FieldError

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

// Transcoder maps the HTTP bindings of a set of services.
type Transcoder struct {
	bindings  []*Binding
	types     *dynamicpb.Types
	resolver  resolver
	marshal   protojson.MarshalOptions
	unmarshal protojson.UnmarshalOptions
	maxBody   int64
	maxMsg    int
	services  []string
}

// Load reads a binary FileDescriptorSet (protoc --include_imports
// --descriptor_set_out, buf build -o) and builds a Transcoder of it.
func Load(path string, o Options) (*Transcoder, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{Field: "descriptors", Msg: err.Error()}}
	}
	set := &descriptorpb.FileDescriptorSet{}
	// proto.Unmarshal resolves extensions from the global registry, where
	// the annotations package registered google.api.http: the rules come
	// out parsed.
	if err := proto.Unmarshal(b, set); err != nil {
		return nil, Errors{{Field: "descriptors", Msg: fmt.Sprintf("%q is not a binary FileDescriptorSet: %v", path, err)}}
	}
	return New(set, o)
}

// New builds a Transcoder of the services o names in set.
func New(set *descriptorpb.FileDescriptorSet, o Options) (*Transcoder, error) {
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	// A set built in memory (a compiler's) may hold the http rules as
	// dynamic extensions: a round trip through the wire form parses them
	// as annotations.HttpRule.
	if wire, err := proto.Marshal(set); err == nil {
		fresh := &descriptorpb.FileDescriptorSet{}
		if proto.Unmarshal(wire, fresh) == nil {
			set = fresh
		}
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, Errors{{Field: "descriptors", Msg: fmt.Sprintf("%v (a set written with --include_imports holds every dependency)", err)}}
	}
	t := &Transcoder{types: dynamicpb.NewTypes(files), maxBody: o.MaxRequestBytes, maxMsg: o.MaxMessageBytes, services: o.Services}
	t.resolver = resolver{t.types}
	t.marshal = protojson.MarshalOptions{UseProtoNames: o.Print.UseProtoNames, EmitUnpopulated: o.Print.EmitUnpopulated,
		UseEnumNumbers: o.Print.UseEnumNumbers, Multiline: o.Print.Multiline, Resolver: t.resolver}
	if o.Print.Multiline {
		t.marshal.Indent = "  "
	}
	t.unmarshal = protojson.UnmarshalOptions{Resolver: t.resolver}
	var errs Errors
	if len(o.Services) == 0 {
		errs = append(errs, &FieldError{Field: "services", Msg: "name at least one service"})
	}
	for i, name := range o.Services {
		field := fmt.Sprintf("services[%d]", i)
		d, err := files.FindDescriptorByName(protoreflect.FullName(name))
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if err != nil || !ok {
			errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf("no service %q in the descriptor set (it has %s)", name, serviceList(files))})
			continue
		}
		for j := 0; j < sd.Methods().Len(); j++ {
			for _, err := range t.bind(sd.Methods().Get(j)) {
				errs = append(errs, &FieldError{Field: field, Msg: err.Error()})
			}
		}
	}
	if errs != nil {
		return nil, errs
	}
	return t, nil
}

// serviceList names the services of files, for an error.
func serviceList(files *protoregistry.Files) string {
	var names []string
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			names = append(names, string(fd.Services().Get(i).FullName()))
		}
		return len(names) < 50
	})
	if len(names) == 0 {
		return "none"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// bind adds the bindings of one method: its HttpRule and the rule's
// additional_bindings, or, without a rule, POST /pkg.Service/Method with
// the whole body (as Envoy does).
func (t *Transcoder) bind(md protoreflect.MethodDescriptor) []error {
	name := string(md.FullName())
	if md.IsStreamingClient() {
		if rule := httpRule(md); rule != nil {
			return []error{fmt.Errorf("method %s: a client-streaming method cannot be transcoded (unary and server-streaming only)", name)}
		}
		return nil
	}
	rule := httpRule(md)
	if rule == nil {
		rule = &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: grpcPath(md)}, Body: "*"}
	}
	var errs []error
	rules := []*annotations.HttpRule{rule}
	for _, ab := range rule.GetAdditionalBindings() {
		if len(ab.GetAdditionalBindings()) > 0 {
			errs = append(errs, fmt.Errorf("method %s: additional_bindings may not nest", name))
		}
		rules = append(rules, ab)
	}
	for _, r := range rules {
		b, err := t.newBinding(md, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("method %s: %w", name, err))
			continue
		}
		for _, o := range t.bindings {
			if o.HTTPMethod == b.HTTPMethod && o.Template.raw == b.Template.raw {
				errs = append(errs, fmt.Errorf("method %s: %s %s is bound to %s already", name, b.HTTPMethod, b.Template.raw, o.Method.FullName()))
			}
		}
		t.bindings = append(t.bindings, b)
	}
	return errs
}

// httpRule is the google.api.http option of a method, or nil.
func httpRule(md protoreflect.MethodDescriptor) *annotations.HttpRule {
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil || !proto.HasExtension(opts, annotations.E_Http) {
		return nil
	}
	r, _ := proto.GetExtension(opts, annotations.E_Http).(*annotations.HttpRule)
	return r
}

// grpcPath is a method's gRPC request path, /pkg.Service/Method.
func grpcPath(md protoreflect.MethodDescriptor) string {
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
}

// Binding is one HTTP method and path template bound to a gRPC method.
type Binding struct {
	Method     protoreflect.MethodDescriptor
	HTTPMethod string
	Template   *Template
	// GRPCPath is the request path of the gRPC call.
	GRPCPath string
	t        *Transcoder
	body     string // "", "*" or a top-level field
	bodyFd   protoreflect.FieldDescriptor
	respFd   protoreflect.FieldDescriptor // response_body; nil: the message
	pathFds  [][]protoreflect.FieldDescriptor
	index    int // declaration order
}

// String is "GET /v1/{name=shelves/*} pkg.Library/GetShelf".
func (b *Binding) String() string {
	return b.HTTPMethod + " " + b.Template.raw + " " + string(b.Method.FullName())
}

// Name is the gRPC method's name, pkg.Service/Method.
func (b *Binding) Name() string { return b.GRPCPath[1:] }

// ServerStreaming reports whether the call is server-streaming.
func (b *Binding) ServerStreaming() bool { return b.Method.IsStreamingServer() }

func (t *Transcoder) newBinding(md protoreflect.MethodDescriptor, r *annotations.HttpRule) (*Binding, error) {
	b := &Binding{Method: md, GRPCPath: grpcPath(md), t: t, body: r.GetBody(), index: len(t.bindings)}
	var path string
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		b.HTTPMethod, path = http.MethodGet, p.Get
	case *annotations.HttpRule_Put:
		b.HTTPMethod, path = http.MethodPut, p.Put
	case *annotations.HttpRule_Post:
		b.HTTPMethod, path = http.MethodPost, p.Post
	case *annotations.HttpRule_Delete:
		b.HTTPMethod, path = http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		b.HTTPMethod, path = http.MethodPatch, p.Patch
	case *annotations.HttpRule_Custom:
		b.HTTPMethod, path = p.Custom.GetKind(), p.Custom.GetPath()
		if b.HTTPMethod == "" || strings.ContainsAny(b.HTTPMethod, " \t\r\n/:") {
			return nil, fmt.Errorf("custom method kind %q is not an HTTP method", b.HTTPMethod)
		}
	default:
		return nil, errors.New("http rule without a pattern (get, put, post, delete, patch or custom)")
	}
	tmpl, err := ParseTemplate(path)
	if err != nil {
		return nil, err
	}
	b.Template = tmpl
	in, out := md.Input(), md.Output()
	for _, v := range tmpl.vars {
		fds, err := fieldPath(in, v.field)
		if err != nil {
			return nil, fmt.Errorf("path %q: %w", path, err)
		}
		leaf := fds[len(fds)-1]
		if leaf.IsList() || leaf.IsMap() || leaf.Kind() == protoreflect.MessageKind && !wellKnown(leaf.Message()) {
			return nil, fmt.Errorf("path %q: field %q is not a scalar", path, strings.Join(v.field, "."))
		}
		b.pathFds = append(b.pathFds, fds)
	}
	switch b.body {
	case "", "*":
	default:
		if b.bodyFd = in.Fields().ByName(protoreflect.Name(b.body)); b.bodyFd == nil {
			return nil, fmt.Errorf("body: no field %q in %s", b.body, in.FullName())
		}
	}
	if rb := r.GetResponseBody(); rb != "" {
		if b.respFd = out.Fields().ByName(protoreflect.Name(rb)); b.respFd == nil {
			return nil, fmt.Errorf("response_body: no field %q in %s", rb, out.FullName())
		}
	}
	return b, nil
}

// fieldPath resolves a dotted field path in md, by proto names; every
// field but the last must be a singular message.
func fieldPath(md protoreflect.MessageDescriptor, path []string) ([]protoreflect.FieldDescriptor, error) {
	var fds []protoreflect.FieldDescriptor
	for i, name := range path {
		if md == nil {
			return nil, fmt.Errorf("field %q: %s is not a message", strings.Join(path, "."), strings.Join(path[:i], "."))
		}
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, fmt.Errorf("no field %q in %s", strings.Join(path[:i+1], "."), md.FullName())
		}
		fds = append(fds, fd)
		md = nil
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			md = fd.Message()
		}
	}
	return fds, nil
}

// wellKnown reports whether a message type has a JSON string or scalar
// form (Timestamp, Duration, FieldMask, the wrappers), so that a path
// variable or query parameter may set it.
func wellKnown(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask",
		"google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
		"google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
		"google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue":
		return true
	}
	return false
}

// Bindings returns the bindings in declaration order.
func (t *Transcoder) Bindings() []*Binding { return t.bindings }

// Services returns the names of the bound services.
func (t *Transcoder) Services() []string { return t.services }

// Match returns the binding of an HTTP method and escaped path, with the
// values of the template's variables; nil when none matches. Among
// templates that match, the one with the most literal segments wins, then
// the first declared.
func (t *Transcoder) Match(method, path string) (*Binding, []string) {
	var best *Binding
	var vals []string
	for _, b := range t.bindings {
		if b.HTTPMethod != method {
			continue
		}
		if v, ok := b.Template.Match(path); ok && (best == nil || b.Template.literals() > best.Template.literals()) {
			best, vals = b, v
		}
	}
	return best, vals
}

// resolver finds types in the descriptor set, then in the global
// registry (google.rpc.Status and its well-known details), for Any.
type resolver struct{ files *dynamicpb.Types }

func (r resolver) FindMessageByName(n protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := r.files.FindMessageByName(n); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByName(n)
}

func (r resolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if mt, err := r.files.FindMessageByURL(url); err == nil {
		return mt, nil
	}
	return protoregistry.GlobalTypes.FindMessageByURL(url)
}

func (r resolver) FindExtensionByName(n protoreflect.FullName) (protoreflect.ExtensionType, error) {
	if xt, err := r.files.FindExtensionByName(n); err == nil {
		return xt, nil
	}
	return protoregistry.GlobalTypes.FindExtensionByName(n)
}

func (r resolver) FindExtensionByNumber(m protoreflect.FullName, n protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if xt, err := r.files.FindExtensionByNumber(m, n); err == nil {
		return xt, nil
	}
	return protoregistry.GlobalTypes.FindExtensionByNumber(m, n)
}
