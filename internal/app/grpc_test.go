package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec sends []byte messages as they are, so that the test needs no
// generated protobuf code.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string   { return "raw" }
func (rawCodec) String() string { return "raw" }
func msg(s string) *[]byte      { b := []byte(s); return &b }
func recvString(s grpc.ClientStream) (string, error) {
	var b []byte
	err := s.RecvMsg(&b)
	return string(b), err
}

// chatService echoes every message of a bidirectional stream, then ends the
// stream with a trailer and, when asked, an error status.
var chatService = grpc.ServiceDesc{
	ServiceName: "attache.test.Chat",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Talk",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			n := 0
			for {
				var in []byte
				if err := stream.RecvMsg(&in); err == io.EOF {
					break
				} else if err != nil {
					return err
				}
				n++
				if err := stream.SendMsg(msg("echo " + string(in))); err != nil {
					return err
				}
			}
			stream.SetTrailer(metadata.Pairs("x-messages", fmt.Sprint(n)))
			if md, _ := metadata.FromIncomingContext(stream.Context()); len(md.Get("want-error")) > 0 {
				return status.Error(codes.FailedPrecondition, "asked to fail")
			}
			return nil
		},
	}},
}

// TestGRPCStreamingThroughAttache: a bidirectional gRPC stream over h2c on
// both sides, with messages interleaved, trailers and status codes passed.
func TestGRPCStreamingThroughAttache(t *testing.T) {
	t.Parallel()
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&chatService, nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	h := start(t, yamlf(`
listeners:
  - name: grpc
    address: "127.0.0.1:0"
    protocol: http
    routes: [{match: {prefix: /attache.test.Chat/}, to: [{cluster: chat}], timeout: 10s}]
clusters: [{name: chat, endpoints: ["%s"], http: {version: h2c}}]
`, ln.Addr()), nil)
	conn, err := grpc.NewClient(h.addr("grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	for _, wantErr := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if wantErr {
			ctx = metadata.AppendToOutgoingContext(ctx, "want-error", "1")
		}
		stream, err := conn.NewStream(ctx, &chatService.Streams[0], "/attache.test.Chat/Talk")
		if err != nil {
			t.Fatal(err)
		}
		// interleaved: each reply must arrive before the next message is
		// sent, so nothing may be buffered whole along the way
		for i := 0; i < 5; i++ {
			if err := stream.SendMsg(msg(fmt.Sprint("m", i))); err != nil {
				t.Fatal(err)
			}
			got, err := recvString(stream)
			if err != nil || got != fmt.Sprint("echo m", i) {
				t.Fatalf("message %d: got %q, %v", i, got, err)
			}
		}
		stream.CloseSend()
		_, err = recvString(stream)
		if wantErr {
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "asked to fail") {
				t.Errorf("status through attache: got %v, want FailedPrecondition", err)
			}
		} else if err != io.EOF {
			t.Errorf("end of stream: got %v, want EOF (OK status)", err)
		}
		if got := stream.Trailer().Get("x-messages"); len(got) != 1 || got[0] != "5" {
			t.Errorf("trailer x-messages: got %v, want [5]", got)
		}
		cancel()
	}
}
