package httpproxy

import (
	"errors"
	"fmt"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/grpcjson"
)

// GRPCTranscode turns a route into a JSON-to-gRPC transcoder: requests
// that match a google.api.http binding of Services in the Descriptors
// file are sent to the route's clusters as gRPC calls, and answered as
// JSON (docs/http.md).
type GRPCTranscode struct {
	// DescriptorSetFile is a binary FileDescriptorSet with its imports
	// (protoc --include_imports --descriptor_set_out, buf build -o).
	DescriptorSetFile string `yaml:"descriptor_set_file"`
	// Services are fully qualified service names (pkg.Service).
	Services []string `yaml:"services"`
	// MaxRequestBytes bounds a request's JSON body (413 beyond).
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// MaxMessageBytes bounds one gRPC response message (502 beyond).
	MaxMessageBytes int            `yaml:"max_message_bytes"`
	PrintOptions    TranscodePrint `yaml:"print_options"`
}

// TranscodePrint is how JSON is written; the defaults are grpc-gateway's.
type TranscodePrint struct {
	UseProtoNames   bool  `yaml:"use_proto_names"`
	EmitUnpopulated *bool `yaml:"emit_unpopulated"` // default true
	UseEnumNumbers  bool  `yaml:"use_enum_numbers"`
	Multiline       bool  `yaml:"multiline"`
}

// Options are the transcoder options of g (defaults applied).
func (g *GRPCTranscode) Options() grpcjson.Options {
	return grpcjson.Options{
		Services:        g.Services,
		MaxRequestBytes: int64(g.MaxRequestBytes),
		MaxMessageBytes: g.MaxMessageBytes,
		Print: grpcjson.PrintOptions{UseProtoNames: g.PrintOptions.UseProtoNames, EmitUnpopulated: g.PrintOptions.EmitUnpopulated == nil || *g.PrintOptions.EmitUnpopulated,
			UseEnumNumbers: g.PrintOptions.UseEnumNumbers, Multiline: g.PrintOptions.Multiline},
	}
}

func (g *GRPCTranscode) applyDefaults() {
	if g.MaxRequestBytes == 0 {
		g.MaxRequestBytes = grpcjson.DefaultMaxRequestBytes
	}
	if g.MaxMessageBytes == 0 {
		g.MaxMessageBytes = grpcjson.DefaultMaxMessageBytes
	}
	if g.PrintOptions.EmitUnpopulated == nil {
		t := true
		g.PrintOptions.EmitUnpopulated = &t
	}
}

// maxTranscodeBytes caps both bounds: a body or a message is held whole.
const maxTranscodeBytes = 64 << 20

// grpcTranscode checks a route's transcoding block: the descriptor file
// parses, its services exist, every http rule's template and fields
// resolve; the route's clusters speak HTTP/2; no prefix rewrite.
func validateTranscode(c *config.Check, rp string, r *Route) {
	g := r.GRPCTranscode
	p := rp + ".grpc_transcode"
	for _, f := range []struct {
		name string
		n    int
	}{{"max_request_bytes", g.MaxRequestBytes}, {"max_message_bytes", g.MaxMessageBytes}} {
		if f.n < 1 || f.n > maxTranscodeBytes {
			c.Errorf(p+"."+f.name, "must be 1-%d", maxTranscodeBytes)
		}
	}
	for i, s := range g.Services {
		if s == "" {
			c.Errorf(fmt.Sprintf("%s.services[%d]", p, i), "empty service name")
		}
	}
	if rw := r.Rewrite; rw != nil && rw.Prefix != "" {
		c.Errorf(rp+".rewrite.prefix", "not with grpc_transcode: transcoded calls go to /package.Service/Method")
	}
	for j, t := range r.To {
		cl := c.Config.Cluster(t.Cluster)
		if cl == nil {
			continue // reported by clusterRef
		}
		if v := clusterOptions(cl).Version; v != "h2c" && v != "2" {
			c.Errorf(fmt.Sprintf("%s.to[%d].cluster", rp, j), "cluster %q has http.version %q: gRPC needs HTTP/2 (h2c, or 2 with tls)", cl.Name, v)
		}
	}
	if g.DescriptorSetFile == "" {
		c.Errorf(p+".descriptor_set_file", "required: a binary FileDescriptorSet (protoc --include_imports --descriptor_set_out)")
		return
	}
	if !c.File(p+".descriptor_set_file", g.DescriptorSetFile) {
		return
	}
	if _, err := grpcjson.Load(g.DescriptorSetFile, g.Options()); err != nil {
		var es grpcjson.Errors
		if !errors.As(err, &es) {
			c.Errorf(p, "%v", err)
			return
		}
		for _, e := range es {
			field := e.Field
			if field == "descriptors" {
				field = "descriptor_set_file"
			}
			c.Errorf(p+"."+field, "%s", e.Msg)
		}
	}
}
