// Package grpcjsontest builds, for tests of JSON-to-gRPC transcoding, a
// FileDescriptorSet compiled from .proto text in the test (protocompile;
// no protoc needed) and a real grpc-go server of it whose handlers work on
// dynamicpb messages. Tests only.
package grpcjsontest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// LibraryProto is the service the tests transcode: every binding form of
// google.api.http (path variables, nested and multi-segment ones, verbs,
// custom methods, body "*" and a body field, response_body,
// additional_bindings), a server stream and a method without a rule.
const LibraryProto = `syntax = "proto3";
package test.library.v1;

import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Kind {
  KIND_UNSPECIFIED = 0;
  NOVEL = 1;
  ESSAY = 2;
}

message Author {
  string display_name = 1;
  int32 born = 2;
}

message Book {
  string name = 1;
  string title = 2;
  int64 pages = 3;
  repeated string tags = 4;
  Kind kind = 5;
  google.protobuf.Timestamp published = 6;
  Author author = 7;
  bytes cover = 8;
}

message GetBookRequest {
  string name = 1;
  bool with_author = 2;
}

message ListBooksRequest {
  string parent = 1;
  int32 page_size = 2;
  repeated string tags = 3;
  Author author = 4;
  Kind kind = 5;
  google.protobuf.Int32Value min_pages = 6;
  repeated int64 ids = 7;
}

message ListBooksResponse {
  repeated Book books = 1;
  string next_page_token = 2;
}

message CreateBookRequest {
  string parent = 1;
  Book book = 2;
  string book_id = 3;
}

message UpdateBookRequest {
  Book book = 1;
  bool validate_only = 2;
}

message DeleteBookRequest {
  string name = 1;
}

message Empty {}

service Library {
  rpc GetBook(GetBookRequest) returns (Book) {
    option (google.api.http) = {
      get: "/v1/{name=shelves/*/books/*}"
      additional_bindings { get: "/v1/books/{name}" }
    };
  }
  rpc ListBooks(ListBooksRequest) returns (ListBooksResponse) {
    option (google.api.http) = { get: "/v1/{parent=shelves/*}/books" };
  }
  rpc ListBookList(ListBooksRequest) returns (ListBooksResponse) {
    option (google.api.http) = { get: "/v1/{parent=shelves/*}/booklist" response_body: "books" };
  }
  rpc CreateBook(CreateBookRequest) returns (Book) {
    option (google.api.http) = { post: "/v1/{parent=shelves/*}/books" body: "book" };
  }
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = { patch: "/v1/{book.name=shelves/*/books/*}" body: "book" };
  }
  rpc ReplaceBook(Book) returns (Book) {
    option (google.api.http) = { put: "/v1/{name=shelves/*/books/*}" body: "*" };
  }
  rpc DeleteBook(DeleteBookRequest) returns (Empty) {
    option (google.api.http) = { delete: "/v1/{name=shelves/*/books/*}" };
  }
  rpc PublishBook(GetBookRequest) returns (Book) {
    option (google.api.http) = { post: "/v1/{name=shelves/*/books/*}:publish" body: "*" };
  }
  rpc ArchiveBook(GetBookRequest) returns (Book) {
    option (google.api.http) = { custom: { kind: "ARCHIVE" path: "/v1/archive/{name=**}" } };
  }
  rpc WatchBooks(ListBooksRequest) returns (stream Book) {
    option (google.api.http) = { get: "/v1/{parent=shelves/*}/books:watch" };
  }
  rpc Echo(Book) returns (Book);
}
`

// Compile compiles .proto sources (file name to text), with the
// well-known types and google/api/{annotations,http}.proto available, and
// returns the FileDescriptorSet of the named files with every import
// (protoc --include_imports).
func Compile(t testing.TB, sources map[string]string, files ...string) *descriptorpb.FileDescriptorSet {
	t.Helper()
	google := map[string]protoreflect.FileDescriptor{
		"google/api/annotations.proto": annotations.File_google_api_annotations_proto,
		"google/api/http.proto":        annotations.File_google_api_http_proto,
	}
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(protocompile.ResolverFunc(func(path string) (protocompile.SearchResult, error) {
		if src, ok := sources[path]; ok {
			return protocompile.SearchResult{Source: strings.NewReader(src)}, nil
		}
		if d, ok := google[path]; ok {
			return protocompile.SearchResult{Proto: protodesc.ToFileDescriptorProto(d)}, nil
		}
		return protocompile.SearchResult{}, fmt.Errorf("%s: %w", path, os.ErrNotExist)
	}))}
	compiled, err := c.Compile(context.Background(), files...)
	if err != nil {
		t.Fatalf("compile protos: %v", err)
	}
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := 0; i < fd.Imports().Len(); i++ {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, f := range compiled {
		add(f)
	}
	return set
}

// WriteSet writes set as a binary file in a temporary directory and
// returns its path.
func WriteSet(t testing.TB, set *descriptorpb.FileDescriptorSet) string {
	t.Helper()
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "descriptors.pb")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// LibrarySet is the FileDescriptorSet of LibraryProto.
func LibrarySet(t testing.TB) *descriptorpb.FileDescriptorSet {
	return Compile(t, map[string]string{"library.proto": LibraryProto}, "library.proto")
}

// ServeLibrary starts a grpc-go server of the Library service on a free
// loopback port, stopped when the test ends, and returns its address.
//
// What it answers, so that a test can see what reached it:
//   - GetBook, PublishBook, ArchiveBook: a Book named as asked, titled with
//     the method and with_author; names ending in /missing, /denied,
//     /unauth, /unavailable, /slow-deadline fail with NOT_FOUND (with a
//     ResourceInfo detail), PERMISSION_DENIED, UNAUTHENTICATED,
//     UNAVAILABLE, DEADLINE_EXCEEDED; the response carries the header
//     x-library-method.
//   - ListBooks, ListBookList: one Book per tag (name parent/books/tag,
//     pages page_size, kind, author, title the ids and min_pages).
//   - CreateBook: the book, named parent/books/book_id. UpdateBook,
//     ReplaceBook, Echo: the book as received; UpdateBook's title gets
//     " (validated)" with validate_only.
//   - DeleteBook: Empty; NOT_FOUND for names ending in /missing.
//   - WatchBooks: page_size books parent/books/0..; tag "fail-first" fails
//     with FAILED_PRECONDITION before any, "fail-after" with ABORTED
//     after the first; with tag "hold" it waits after the first message
//     until hold is closed (nil: no wait), so that a test can see the
//     first one arrive alone.
//
// opts are the server's options (TLS credentials, say).
func ServeLibrary(t testing.TB, set *descriptorpb.FileDescriptorSet, hold <-chan struct{}, opts ...grpc.ServerOption) string {
	t.Helper()
	files, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("test.library.v1.Library")
	if err != nil {
		t.Fatal(err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	desc := grpc.ServiceDesc{ServiceName: string(sd.FullName()), HandlerType: (*any)(nil)}
	for i := 0; i < sd.Methods().Len(); i++ {
		md := sd.Methods().Get(i)
		if md.IsStreamingServer() {
			desc.Streams = append(desc.Streams, grpc.StreamDesc{StreamName: string(md.Name()), ServerStreams: true,
				Handler: func(_ any, stream grpc.ServerStream) error {
					in := dynamicpb.NewMessage(md.Input())
					if err := stream.RecvMsg(in); err != nil {
						return err
					}
					return watch(md, in, stream, hold)
				}})
			continue
		}
		desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: string(md.Name()),
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := dynamicpb.NewMessage(md.Input())
				if err := dec(in); err != nil {
					return nil, err
				}
				grpc.SetHeader(ctx, metadata.Pairs("x-library-method", string(md.Name())))
				return unary(md, in)
			}})
	}
	srv := grpc.NewServer(opts...)
	srv.RegisterService(&desc, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func field(m protoreflect.Message, name string) protoreflect.Value {
	return m.Get(m.Descriptor().Fields().ByName(protoreflect.Name(name)))
}

func set(m protoreflect.Message, name string, v protoreflect.Value) {
	m.Set(m.Descriptor().Fields().ByName(protoreflect.Name(name)), v)
}

func newBook(md protoreflect.MethodDescriptor, name, title string) *dynamicpb.Message {
	b := dynamicpb.NewMessage(md.Output())
	set(b, "name", protoreflect.ValueOfString(name))
	set(b, "title", protoreflect.ValueOfString(title))
	return b
}

func unary(md protoreflect.MethodDescriptor, in *dynamicpb.Message) (any, error) {
	switch md.Name() {
	case "GetBook", "PublishBook", "ArchiveBook":
		name := field(in, "name").String()
		switch {
		case strings.HasSuffix(name, "/missing"):
			st, _ := status.New(codes.NotFound, "no book "+name).WithDetails(&errdetails.ResourceInfo{ResourceType: "book", ResourceName: name})
			return nil, st.Err()
		case strings.HasSuffix(name, "/denied"):
			return nil, status.Error(codes.PermissionDenied, "not yours")
		case strings.HasSuffix(name, "/unauth"):
			return nil, status.Error(codes.Unauthenticated, "who are you")
		case strings.HasSuffix(name, "/unavailable"):
			return nil, status.Error(codes.Unavailable, "try later ünïcode 100%")
		case strings.HasSuffix(name, "/slow-deadline"):
			return nil, status.Error(codes.DeadlineExceeded, "too slow")
		}
		return newBook(md, name, fmt.Sprintf("%s with_author=%v", md.Name(), field(in, "with_author").Bool())), nil
	case "ListBooks", "ListBookList":
		out := dynamicpb.NewMessage(md.Output())
		books := out.Mutable(md.Output().Fields().ByName("books")).List()
		tags := field(in, "tags").List()
		var ids []string
		for i := 0; i < field(in, "ids").List().Len(); i++ {
			ids = append(ids, fmt.Sprint(field(in, "ids").List().Get(i).Int()))
		}
		title := "ids=" + strings.Join(ids, ",")
		if in.Has(in.Descriptor().Fields().ByName("min_pages")) {
			title += fmt.Sprintf(" min_pages=%d", field(field(in, "min_pages").Message(), "value").Int())
		}
		for i := 0; i < tags.Len(); i++ {
			b := dynamicpb.NewMessage(md.Output().Fields().ByName("books").Message())
			set(b, "name", protoreflect.ValueOfString(field(in, "parent").String()+"/books/"+tags.Get(i).String()))
			set(b, "title", protoreflect.ValueOfString(title))
			set(b, "pages", protoreflect.ValueOfInt64(field(in, "page_size").Int()))
			set(b, "kind", field(in, "kind"))
			if in.Has(in.Descriptor().Fields().ByName("author")) {
				set(b, "author", field(in, "author"))
			}
			books.Append(protoreflect.ValueOfMessage(b))
		}
		set(out, "next_page_token", protoreflect.ValueOfString("next"))
		return out, nil
	case "CreateBook":
		b := field(in, "book").Message()
		set(b, "name", protoreflect.ValueOfString(field(in, "parent").String()+"/books/"+field(in, "book_id").String()))
		return b.Interface(), nil
	case "UpdateBook":
		b := field(in, "book").Message()
		if field(in, "validate_only").Bool() {
			set(b, "title", protoreflect.ValueOfString(field(b, "title").String()+" (validated)"))
		}
		return b.Interface(), nil
	case "ReplaceBook", "Echo":
		return in, nil
	case "DeleteBook":
		if strings.HasSuffix(field(in, "name").String(), "/missing") {
			return nil, status.Error(codes.NotFound, "no such book")
		}
		return dynamicpb.NewMessage(md.Output()), nil
	}
	return nil, status.Error(codes.Unimplemented, string(md.Name()))
}

func watch(md protoreflect.MethodDescriptor, in *dynamicpb.Message, stream grpc.ServerStream, hold <-chan struct{}) error {
	tags := map[string]bool{}
	for i := 0; i < field(in, "tags").List().Len(); i++ {
		tags[field(in, "tags").List().Get(i).String()] = true
	}
	if tags["fail-first"] {
		return status.Error(codes.FailedPrecondition, "shelf is locked")
	}
	for i := 0; i < int(field(in, "page_size").Int()); i++ {
		b := newBook(md, fmt.Sprintf("%s/books/%d", field(in, "parent").String(), i), "watched")
		if err := stream.SendMsg(b); err != nil {
			return err
		}
		if tags["fail-after"] {
			return status.Error(codes.Aborted, "watch aborted")
		}
		if tags["hold"] && i == 0 && hold != nil {
			select {
			case <-hold:
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		}
	}
	return nil
}
