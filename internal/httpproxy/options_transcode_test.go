package httpproxy

import (
	"errors"
	"github.com/attache-proxy/attache/internal/config"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attache-proxy/attache/internal/grpcjson/grpcjsontest"
)

func TestGRPCTranscodeConfig(t *testing.T) {
	t.Parallel()
	good := grpcjsontest.WriteSet(t, grpcjsontest.LibrarySet(t))
	badTemplate := grpcjsontest.WriteSet(t, grpcjsontest.Compile(t, map[string]string{"bad.proto": `syntax = "proto3";
package bad;
import "google/api/annotations.proto";
message M { string name = 1; }
service S {
  rpc Get(M) returns (M) { option (google.api.http) = { get: "/v1/{name=shelves/*" }; }
}`}, "bad.proto"))
	notASet := filepath.Join(t.TempDir(), "garbage.pb")
	os.WriteFile(notASet, []byte("\xff\xff\xff not protobuf"), 0o644)
	conf := func(block, version, extra string) string {
		return `listeners:
  - name: api
    address: "127.0.0.1:7000"
    protocol: http
    routes:
      - match: {prefix: /}
        to: [{cluster: lib}]
` + extra + `        grpc_transcode:
` + block + `clusters:
  - name: lib
    endpoints: ["127.0.0.1:9000"]
    http: {version: ` + version + `}
`
	}
	block := func(desc, service string) string {
		return "          descriptor_set_file: " + desc + "\n          services: [" + service + "]\n"
	}

	c, err := parse([]byte(conf(block(good, "test.library.v1.Library"), "h2c", "")), noEnv)
	if err != nil {
		t.Fatalf("good config: %v", err)
	}
	g := Options(&c.Listeners[0]).Routes[0].GRPCTranscode
	if g.MaxRequestBytes != 1<<20 || g.MaxMessageBytes != 4<<20 || g.PrintOptions.EmitUnpopulated == nil || !*g.PrintOptions.EmitUnpopulated {
		t.Errorf("defaults: got %+v", g)
	}
	if o := g.Options(); !o.Print.EmitUnpopulated || o.Print.UseProtoNames {
		t.Errorf("options: got %+v", o.Print)
	}
	c, err = parse([]byte(conf(block(good, "test.library.v1.Library")+"          print_options: {emit_unpopulated: false, use_proto_names: true}\n", "h2c", "        rewrite: {host: x}\n")), noEnv)
	if err != nil {
		t.Fatalf("config with print_options and a host rewrite: %v", err)
	}
	if o := Options(&c.Listeners[0]).Routes[0].GRPCTranscode.Options(); o.Print.EmitUnpopulated || !o.Print.UseProtoNames {
		t.Errorf("print_options: got %+v", o.Print)
	}

	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"no descriptors", conf("          services: [a.B]\n", "h2c", ""),
			[]string{"listeners[0].routes[0].grpc_transcode.descriptor_set_file: required: a binary FileDescriptorSet (protoc --include_imports --descriptor_set_out) (line 9)"}},
		{"missing file", conf(block("/nonexistent/x.pb", "a.B"), "h2c", ""),
			[]string{`listeners[0].routes[0].grpc_transcode.descriptor_set_file: no such file "/nonexistent/x.pb" (line 9)`}},
		{"not a set", conf(block(notASet, "a.B"), "h2c", ""),
			[]string{`listeners[0].routes[0].grpc_transcode.descriptor_set_file: "` + notASet + `" is not a binary FileDescriptorSet`}},
		{"unknown service", conf(block(good, "test.library.v1.Library, test.library.v1.Shelves"), "h2c", ""),
			[]string{`listeners[0].routes[0].grpc_transcode.services[1]: no service "test.library.v1.Shelves" in the descriptor set (it has test.library.v1.Library) (line 10)`}},
		{"bad template", conf(block(badTemplate, "bad.S"), "h2c", ""),
			[]string{`listeners[0].routes[0].grpc_transcode.services[0]: method bad.S.Get: path template "/v1/{name=shelves/*": unclosed variable "name" (line 10)`}},
		{"http/1.1 cluster", conf(block(good, "test.library.v1.Library"), "auto", ""),
			[]string{`listeners[0].routes[0].to[0].cluster: cluster "lib" has http.version "auto": gRPC needs HTTP/2 (h2c, or 2 with tls) (line 7)`}},
		{"prefix rewrite", conf(block(good, "test.library.v1.Library"), "h2c", "        rewrite: {prefix: /x/}\n"),
			[]string{`listeners[0].routes[0].rewrite.prefix: not with grpc_transcode`}},
		{"bounds", conf(block(good, "test.library.v1.Library")+"          max_request_bytes: -1\n          max_message_bytes: 100000000\n", "h2c", ""),
			[]string{"grpc_transcode.max_request_bytes: must be 1-67108864 (line 11)", "grpc_transcode.max_message_bytes: must be 1-67108864 (line 12)"}},
		{"unknown print option", conf(block(good, "test.library.v1.Library")+"          print_options: {emit_defaults: true}\n", "h2c", ""),
			[]string{"print_options.emit_defaults: unknown field"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse([]byte(tc.yaml), noEnv)
			var errs config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("got %v, want Errors", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs.Error(), w) {
					t.Errorf("got:\n%v\nwant a line containing:\n%s", errs, w)
				}
			}
		})
	}
}
