package grpcjson

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attache-proxy/attache/internal/grpcjson/grpcjsontest"
)

var (
	libOnce sync.Once
	libSet  *descriptorpb.FileDescriptorSet
)

func library(t testing.TB) *descriptorpb.FileDescriptorSet {
	libOnce.Do(func() { libSet = grpcjsontest.LibrarySet(t) })
	return libSet
}

func newLibrary(t testing.TB, o Options) *Transcoder {
	t.Helper()
	if o.Services == nil {
		o.Services = []string{"test.library.v1.Library"}
	}
	tc, err := New(library(t), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tc
}

func TestParseTemplate(t *testing.T) {
	t.Parallel()
	good := map[string][]string{ // template: its fields
		"/v1/shelves":                     nil,
		"/v1/{name}":                      {"name"},
		"/v1/{name=shelves/*/books/*}":    {"name"},
		"/v1/{book.name=shelves/*}/x":     {"book.name"},
		"/v1/{name=**}":                   {"name"},
		"/v1/**":                          nil,
		"/v1/{a}/{b}:verb":                {"a", "b"},
		"/v1/%2Fx/{a=x/*}":                {"a"},
		"/v1/a-b.c~d_e":                   nil,
		"/{parent=projects/*}/items:list": {"parent"},
	}
	for tmpl, fields := range good {
		got, err := ParseTemplate(tmpl)
		if err != nil {
			t.Errorf("%q: %v", tmpl, err)
			continue
		}
		if f := got.Fields(); len(f) != len(fields) || len(f) > 0 && !reflect.DeepEqual(f, fields) {
			t.Errorf("%q: fields got %q, want %q", tmpl, f, fields)
		}
	}
	bad := map[string]string{
		"v1/x":                             "must start with /",
		"/":                                "empty segment",
		"/v1/":                             "empty segment",
		"/v1//x":                           "unexpected",
		"/v1/{name":                        "unclosed",
		"/v1/{}":                           "want a field name",
		"/v1/{1a}":                         "want a field name",
		"/v1/{a={b}}":                      "nested",
		"/v1/**/x":                         "** must be the last",
		"/v1/{a}/{a}":                      "bound twice",
		"/v1/x:":                           "empty verb",
		"/v1/x:a/b":                        "unexpected",
		"/v1/x y":                          "unexpected",
		"/v1/%zz":                          "unexpected",
		"/v1/{a=**}/{b}":                   "** must be the last",
		"/v1/{a.}":                         "want a field name",
		"/v1/x}":                           "unexpected",
		"/v1/" + strings.Repeat("a", 5000): "longer than",
	}
	for tmpl, want := range bad {
		if _, err := ParseTemplate(tmpl); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: got error %v, want one containing %q", tmpl, err, want)
		}
	}
}

func TestTemplateMatch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		tmpl, path string
		want       []string // nil: no match
	}{
		{"/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2", []string{"shelves/1/books/2"}},
		{"/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books", nil},
		{"/v1/{name=shelves/*/books/*}", "/v1/shelves//books/2", nil},
		{"/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2/x", nil},
		{"/v1/books/{name}", "/v1/books/a%2Fb", []string{"a/b"}},                                               // one segment: all decoded
		{"/v1/{name=shelves/*/books/*}", "/v1/shelves/a%2Fb/books/c%20d", []string{"shelves/a%2Fb/books/c d"}}, // several: %2F kept
		{"/v1/{name=**}", "/v1/a/b/c", []string{"a/b/c"}},
		{"/v1/{name=**}", "/v1", []string{""}},
		{"/v1/{parent=shelves/*}/books:watch", "/v1/shelves/3/books:watch", []string{"shelves/3"}},
		{"/v1/{parent=shelves/*}/books:watch", "/v1/shelves/3/books", nil},
		{"/v1/{parent=shelves/*}/books", "/v1/shelves/3/books:watch", nil},
		{"/v1/%7Ex", "/v1/~x", []string{}},
		{"/v1/x", "/v1/%78", []string{}},
		{"/v1/{a}", "/v1/%zz", nil},
		{"/v1/{a}", "v1/x", nil},
	} {
		tm, err := ParseTemplate(c.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := tm.Match(c.path)
		if c.want == nil {
			if ok {
				t.Errorf("%s on %s: got a match %q, want none", c.tmpl, c.path, got)
			}
			continue
		}
		if !ok || len(got) != len(c.want) || len(got) > 0 && !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s on %s: got %q (%v), want %q", c.tmpl, c.path, got, ok, c.want)
		}
	}
}

func TestMatchBindings(t *testing.T) {
	t.Parallel()
	tc := newLibrary(t, Options{})
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/v1/shelves/1/books/2", "test.library.v1.Library/GetBook"},
		{"GET", "/v1/books/2", "test.library.v1.Library/GetBook"},
		{"GET", "/v1/shelves/1/books", "test.library.v1.Library/ListBooks"},
		{"GET", "/v1/shelves/1/books:watch", "test.library.v1.Library/WatchBooks"},
		{"POST", "/v1/shelves/1/books", "test.library.v1.Library/CreateBook"},
		{"PATCH", "/v1/shelves/1/books/2", "test.library.v1.Library/UpdateBook"},
		{"DELETE", "/v1/shelves/1/books/2", "test.library.v1.Library/DeleteBook"},
		{"POST", "/v1/shelves/1/books/2:publish", "test.library.v1.Library/PublishBook"},
		{"ARCHIVE", "/v1/archive/a/b/c", "test.library.v1.Library/ArchiveBook"},
		{"POST", "/test.library.v1.Library/Echo", "test.library.v1.Library/Echo"},
		{"PUT", "/v1/shelves/1", ""},
		{"GET", "/v2/shelves/1/books/2", ""},
	} {
		b, _ := tc.Match(c.method, c.path)
		got := ""
		if b != nil {
			got = b.Name()
		}
		if got != c.want {
			t.Errorf("%s %s: got %q, want %q", c.method, c.path, got, c.want)
		}
	}
}

// decode turns a framed request back into JSON with proto names.
func decode(t *testing.T, b *Binding, framed []byte) map[string]any {
	t.Helper()
	if len(framed) < 5 || framed[0] != 0 || int(binary.BigEndian.Uint32(framed[1:5])) != len(framed)-5 {
		t.Fatalf("bad frame % x", framed[:min(5, len(framed))])
	}
	m := dynamicpb.NewMessage(b.Method.Input())
	if err := proto.Unmarshal(framed[5:], m); err != nil {
		t.Fatal(err)
	}
	js, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	var out map[string]any
	json.Unmarshal(js, &out)
	return out
}

func jsonMap(s string) map[string]any {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		panic(err)
	}
	return m
}

func TestRequest(t *testing.T) {
	t.Parallel()
	tc := newLibrary(t, Options{MaxRequestBytes: 256})
	for _, c := range []struct {
		name, method, target, body string
		want                       string // the request message, proto names
		status                     int    // refused: the status
		errHas                     string
	}{
		{name: "path variable", method: "GET", target: "/v1/shelves/1/books/2", want: `{"name":"shelves/1/books/2"}`},
		{name: "path and query bool", method: "GET", target: "/v1/books/x?with_author=true", want: `{"name":"x","with_author":true}`},
		{name: "query by JSON name", method: "GET", target: "/v1/books/x?withAuthor=1", want: `{"name":"x","with_author":true}`},
		{name: "query repeated nested enum wrapper", method: "GET",
			target: "/v1/shelves/7/books?page_size=3&tags=a&tags=b&author.display_name=Ann&author.born=1900&kind=ESSAY&min_pages=40&ids=1&ids=2",
			want:   `{"parent":"shelves/7","page_size":3,"tags":["a","b"],"author":{"display_name":"Ann","born":1900},"kind":"ESSAY","min_pages":40,"ids":["1","2"]}`},
		{name: "enum by number", method: "GET", target: "/v1/shelves/7/books?kind=1", want: `{"parent":"shelves/7","kind":"NOVEL"}`},
		{name: "unknown query ignored", method: "GET", target: "/v1/books/x?cachebust=1&author.nope=2", want: `{"name":"x"}`},
		{name: "query cannot override the path", method: "GET", target: "/v1/books/x?name=y", want: `{"name":"x"}`},
		{name: "body field", method: "POST", target: "/v1/shelves/1/books?book_id=b9", body: `{"title":"T","pages":"12","published":"2020-01-02T03:04:05Z","cover":"AQI="}`,
			want: `{"parent":"shelves/1","book_id":"b9","book":{"title":"T","pages":"12","published":"2020-01-02T03:04:05Z","cover":"AQI="}}`},
		{name: "query cannot set inside the body field", method: "POST", target: "/v1/shelves/1/books?book.title=Q", body: `{"title":"T"}`,
			want: `{"parent":"shelves/1","book":{"title":"T"}}`},
		{name: "nested path variable inside the body field", method: "PATCH", target: "/v1/shelves/1/books/2?validate_only=true", body: `{"name":"ignored","title":"T"}`,
			want: `{"book":{"name":"shelves/1/books/2","title":"T"},"validate_only":true}`},
		{name: "body star, path wins, query unused", method: "PUT", target: "/v1/shelves/1/books/2?title=Q", body: `{"name":"other","title":"T","tags":["x"]}`,
			want: `{"name":"shelves/1/books/2","title":"T","tags":["x"]}`},
		{name: "empty body", method: "PUT", target: "/v1/shelves/1/books/2", want: `{"name":"shelves/1/books/2"}`},
		{name: "verb", method: "POST", target: "/v1/shelves/1/books/2:publish", body: `{"withAuthor":true}`, want: `{"name":"shelves/1/books/2","with_author":true}`},
		{name: "multi-segment variable", method: "ARCHIVE", target: "/v1/archive/a/b%2Fc", want: `{"name":"a/b%2Fc"}`},
		{name: "default binding", method: "POST", target: "/test.library.v1.Library/Echo", body: `{"name":"n","kind":"NOVEL"}`, want: `{"name":"n","kind":"NOVEL"}`},

		{name: "unknown JSON field", method: "PUT", target: "/v1/shelves/1/books/2", body: `{"nope":1}`, status: 400, errHas: `unknown field "nope"`},
		{name: "malformed JSON", method: "PUT", target: "/v1/shelves/1/books/2", body: `{"title":`, status: 400},
		{name: "body field injection", method: "POST", target: "/v1/shelves/1/books", body: `{"title":"T"}, "book_id": "x"`, status: 400, errHas: "not a JSON value"},
		{name: "wrong JSON type", method: "PUT", target: "/v1/shelves/1/books/2", body: `{"pages":"many"}`, status: 400},
		{name: "oversized body", method: "PUT", target: "/v1/shelves/1/books/2", body: `{"title":"` + strings.Repeat("x", 300) + `"}`, status: 413},
		{name: "bad query int", method: "GET", target: "/v1/shelves/7/books?page_size=x", status: 400, errHas: `"page_size"`},
		{name: "int overflow", method: "GET", target: "/v1/shelves/7/books?page_size=99999999999", status: 400},
		{name: "bad enum", method: "GET", target: "/v1/shelves/7/books?kind=POEM", status: 400},
		{name: "two values for a singular field", method: "GET", target: "/v1/shelves/7/books?page_size=1&page_size=2", status: 400},
		{name: "message query field", method: "GET", target: "/v1/shelves/7/books?author=x", status: 400},
		{name: "bad query escape", method: "GET", target: "/v1/shelves/7/books?a=%zz", status: 400},
		{name: "bad wrapper", method: "GET", target: "/v1/shelves/7/books?min_pages=x", status: 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			path, query, _ := strings.Cut(c.target, "?")
			b, vars := tc.Match(c.method, path)
			if b == nil {
				t.Fatalf("%s %s: no binding", c.method, path)
			}
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			framed, err := b.Request(vars, query, body)
			if c.status != 0 {
				var e *Error
				if !errors.As(err, &e) || e.Status != c.status || !strings.Contains(e.Msg, c.errHas) {
					t.Fatalf("got %v (%#v), want a %d error containing %q", err, e, c.status, c.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := decode(t, b, framed); !reflect.DeepEqual(got, jsonMap(c.want)) {
				js, _ := json.Marshal(got)
				t.Errorf("got %s, want %s", js, c.want)
			}
		})
	}
}

// frame is one gRPC message frame of m.
func frame(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// trailerBody is a response body whose trailers arrive at its end, as
// net/http's HTTP/2 transport fills them.
type trailerBody struct {
	r       io.Reader
	resp    *http.Response
	trailer http.Header
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.resp.Trailer = b.trailer
	}
	return n, err
}
func (*trailerBody) Close() error { return nil }

func grpcResponse(body []byte, trailer http.Header) *http.Response {
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/grpc"}, "X-Meta": {"m"}}}
	resp.Body = &trailerBody{r: bytes.NewReader(body), resp: resp, trailer: trailer}
	return resp
}

func book(t *testing.T, b *Binding, js string) *dynamicpb.Message {
	m := dynamicpb.NewMessage(b.Method.Output())
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestResponse(t *testing.T) {
	t.Parallel()
	tc := newLibrary(t, Options{Print: PrintOptions{EmitUnpopulated: false}, MaxMessageBytes: 1000})
	get, _ := tc.Match("GET", "/v1/books/x")
	watch, _ := tc.Match("GET", "/v1/shelves/1/books:watch")
	list, _ := tc.Match("GET", "/v1/shelves/1/booklist")
	ok := http.Header{"Grpc-Status": {"0"}}
	for _, c := range []struct {
		name     string
		b        *Binding
		resp     func() *http.Response
		status   int
		body     string // JSON (compared as values), or a prefix of a cut stream
		code     Code
		err, cut string
	}{
		{name: "unary", b: get, resp: func() *http.Response {
			return grpcResponse(frame(t, book(t, get, `{"name":"a","pages":"3"}`)), ok)
		}, status: 200, body: `{"name":"a","pages":"3"}`, code: OK},
		{name: "unary error with details", b: get, resp: func() *http.Response {
			return grpcResponse(nil, http.Header{"Grpc-Status": {"5"}, "Grpc-Message": {"no%20such%20book"}})
		}, status: 404, body: `{"code":5,"message":"no such book"}`, code: NotFound},
		{name: "trailers-only", b: get, resp: func() *http.Response {
			r := grpcResponse(nil, nil)
			r.Header.Set("Grpc-Status", "7")
			r.Header.Set("Grpc-Message", "denied")
			return r
		}, status: 403, body: `{"code":7,"message":"denied"}`, code: PermissionDenied},
		{name: "not gRPC passes", b: get, resp: func() *http.Response {
			return &http.Response{StatusCode: 502, Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("bad gateway"))}
		}, status: 502, body: "bad gateway", code: NoStatus},
		{name: "no status", b: get, resp: func() *http.Response {
			return grpcResponse(frame(t, book(t, get, `{}`)), nil)
		}, err: "without a grpc-status", code: NoStatus},
		{name: "two messages for unary", b: get, resp: func() *http.Response {
			m := frame(t, book(t, get, `{}`))
			return grpcResponse(append(m, m...), ok)
		}, err: "more than one message", code: NoStatus},
		{name: "message over the bound", b: get, resp: func() *http.Response {
			return grpcResponse(frame(t, book(t, get, `{"title":"`+strings.Repeat("x", 2000)+`"}`)), ok)
		}, err: "over the bound", code: NoStatus},
		{name: "cut frame", b: get, resp: func() *http.Response {
			return grpcResponse(frame(t, book(t, get, `{"title":"abc"}`))[:8], ok)
		}, err: "cut inside a message", code: NoStatus},
		{name: "response_body list", b: list, resp: func() *http.Response {
			return grpcResponse(frame(t, book(t, list, `{"books":[{"name":"a"},{"name":"b"}],"nextPageToken":"n"}`)), ok)
		}, status: 200, body: `[{"name":"a"},{"name":"b"}]`, code: OK},
		{name: "response_body empty list", b: list, resp: func() *http.Response {
			return grpcResponse(frame(t, book(t, list, `{"nextPageToken":"n"}`)), ok)
		}, status: 200, body: `[]`, code: OK},
		{name: "stream", b: watch, resp: func() *http.Response {
			return grpcResponse(append(frame(t, book(t, watch, `{"name":"a"}`)), frame(t, book(t, watch, `{"name":"b"}`))...), ok)
		}, status: 200, body: `[{"name":"a"},{"name":"b"}]`, code: OK},
		{name: "empty stream", b: watch, resp: func() *http.Response { return grpcResponse(nil, ok) }, status: 200, body: `[]`, code: OK},
		{name: "stream failing first", b: watch, resp: func() *http.Response {
			return grpcResponse(nil, http.Header{"Grpc-Status": {"9"}, "Grpc-Message": {"locked"}})
		}, status: 400, body: `{"code":9,"message":"locked"}`, code: FailedPrecondition},
		{name: "stream failing after", b: watch, resp: func() *http.Response {
			return grpcResponse(frame(t, book(t, watch, `{"name":"a"}`)), http.Header{"Grpc-Status": {"10"}, "Grpc-Message": {"gone"}})
		}, status: 200, cut: `[{"name":"a"}`, code: Aborted},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := c.resp()
			var got []Code
			err := c.b.Response(resp, func(code Code) { got = append(got, code) })
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got error %v, want %q", err, c.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if c.err == "" {
				if resp.StatusCode != c.status {
					t.Errorf("status: got %d, want %d", resp.StatusCode, c.status)
				}
				body, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case c.cut != "":
					if rerr == nil || string(body) != c.cut {
						t.Errorf("cut stream: got %q, %v; want %q and an error", body, rerr, c.cut)
					}
				case resp.Header.Get("Content-Type") != "application/json" && c.code != NoStatus:
					t.Errorf("content type %q", resp.Header.Get("Content-Type"))
				case c.code == NoStatus:
					if string(body) != c.body {
						t.Errorf("body: got %q, want %q", body, c.body)
					}
				default:
					var g, w any
					if json.Unmarshal(body, &g) != nil || json.Unmarshal([]byte(c.body), &w) != nil || !reflect.DeepEqual(g, w) {
						t.Errorf("body: got %s, want %s", body, c.body)
					}
					if rerr != nil {
						t.Errorf("read: %v", rerr)
					}
				}
				if resp.Trailer != nil {
					t.Errorf("trailers left to pass on: %v", resp.Trailer)
				}
				if c.code != NoStatus && resp.Header.Get("X-Meta") != "m" {
					t.Errorf("metadata header dropped: %v", resp.Header)
				}
			}
			if len(got) != 1 || got[0] != c.code {
				t.Errorf("done: got %v, want [%v]", got, c.code)
			}
		})
	}
}

func TestPrintOptions(t *testing.T) {
	t.Parallel()
	m := `{"name":"a","kind":"NOVEL","author":{"displayName":"Z"}}`
	for _, c := range []struct {
		p    PrintOptions
		want string
	}{
		{PrintOptions{}, `{"name":"a","kind":"NOVEL","author":{"displayName":"Z"}}`},
		{PrintOptions{UseProtoNames: true, UseEnumNumbers: true}, `{"name":"a","kind":1,"author":{"display_name":"Z"}}`},
		{PrintOptions{EmitUnpopulated: true}, `{"name":"a","title":"","pages":"0","tags":[],"kind":"NOVEL","published":null,"author":{"displayName":"Z","born":0},"cover":""}`},
	} {
		tc := newLibrary(t, Options{Print: c.p})
		b, _ := tc.Match("GET", "/v1/books/x")
		js, err := b.messageJSON(frame(t, book(t, b, m))[5:])
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		json.Unmarshal(js, &g)
		json.Unmarshal([]byte(c.want), &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%+v: got %s, want %s", c.p, js, c.want)
		}
	}
}

func TestCodeHTTPStatus(t *testing.T) {
	t.Parallel()
	want := map[Code]int{OK: 200, Canceled: 499, Unknown: 500, InvalidArgument: 400, DeadlineExceeded: 504, NotFound: 404,
		AlreadyExists: 409, PermissionDenied: 403, ResourceExhausted: 429, FailedPrecondition: 400, Aborted: 409,
		OutOfRange: 400, Unimplemented: 501, Internal: 500, Unavailable: 503, DataLoss: 500, Unauthenticated: 401, 99: 500}
	for c, s := range want {
		if got := c.HTTPStatus(); got != s {
			t.Errorf("%v: got %d, want %d", c, got, s)
		}
	}
	if NotFound.String() != "NOT_FOUND" || NoStatus.String() != "none" || Code(99).String() != "99" {
		t.Errorf("names: %v %v %v", NotFound, NoStatus, Code(99))
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	good := library(t)
	withRule := func(path string, rule *annotations.HttpRule) *descriptorpb.FileDescriptorSet {
		set := proto.Clone(good).(*descriptorpb.FileDescriptorSet)
		for _, f := range set.File {
			for _, s := range f.Service {
				for _, m := range s.Method {
					if m.GetName() == path {
						proto.SetExtension(m.Options, annotations.E_Http, rule)
					}
				}
			}
		}
		return set
	}
	noImports := &descriptorpb.FileDescriptorSet{File: good.File[len(good.File)-1:]}
	for _, c := range []struct {
		name     string
		set      *descriptorpb.FileDescriptorSet
		services []string
		field    string
		want     string
	}{
		{"no such service", good, []string{"test.library.v1.Library", "test.library.v1.Nope"}, "services[1]", `no service "test.library.v1.Nope" in the descriptor set (it has test.library.v1.Library)`},
		{"no services", good, []string{}, "services", "at least one"},
		{"missing imports", noImports, []string{"test.library.v1.Library"}, "descriptors", "--include_imports"},
		{"bad template", withRule("GetBook", &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/v1/{name"}}), nil, "services[0]", `method test.library.v1.Library.GetBook: path template "/v1/{name": unclosed variable "name"`},
		{"unknown path field", withRule("GetBook", &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/v1/{nom}"}}), nil, "services[0]", `no field "nom" in test.library.v1.GetBookRequest`},
		{"unknown body field", withRule("GetBook", &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: "/v1/x"}, Body: "nope"}), nil, "services[0]", `body: no field "nope"`},
		{"unknown response_body", withRule("GetBook", &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/v1/x"}, ResponseBody: "nope"}), nil, "services[0]", `response_body: no field "nope"`},
		{"message path field", withRule("CreateBook", &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: "/v1/{book}"}}), nil, "services[0]", `field "book" is not a scalar`},
		{"duplicate binding", withRule("DeleteBook", &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/v1/books/{name}"}}), nil, "services[0]", "bound to test.library.v1.Library.GetBook already"},
		{"no pattern", withRule("GetBook", &annotations.HttpRule{}), nil, "services[0]", "without a pattern"},
		{"bad custom kind", withRule("GetBook", &annotations.HttpRule{Pattern: &annotations.HttpRule_Custom{Custom: &annotations.CustomHttpPattern{Kind: "A B", Path: "/x"}}}), nil, "services[0]", "not an HTTP method"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.services
			if s == nil {
				s = []string{"test.library.v1.Library"}
			}
			_, err := New(c.set, Options{Services: s})
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %v, want Errors", err)
			}
			for _, e := range es {
				if e.Field == c.field && strings.Contains(e.Msg, c.want) {
					return
				}
			}
			t.Errorf("got %v, want %s: ...%s...", err, c.field, c.want)
		})
	}
}

// FuzzTemplate: any template either fails to parse or matches paths
// without panicking, and a template matches the path it describes when
// its variables are replaced by a plain segment.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"/v1/{name=shelves/*/books/*}", "/v1/{name=**}", "/v1/{a}/{b}:verb", "/v1/**", "/v1/%2F{x}",
		"/{a.b.c=x/*/y}/z:do"} {
		f.Add(s, "/v1/shelves/1/books/2")
	}
	f.Fuzz(func(t *testing.T, tmpl, path string) {
		tm, err := ParseTemplate(tmpl)
		if err != nil {
			return
		}
		tm.Match(path)
		tm.Match(tmpl)
		if len(tm.Fields()) != len(tm.vars) {
			t.Fatal("fields")
		}
	})
}

// FuzzRequest: any path, query and body map to a message or an *Error.
func FuzzRequest(f *testing.F) {
	f.Add("PUT", "/v1/shelves/1/books/2", "title=x", `{"title":"T","tags":["a"]}`)
	f.Add("POST", "/v1/shelves/1/books", "book_id=b", `{"title":"T"}`)
	f.Add("GET", "/v1/shelves/7/books", "page_size=3&tags=a&tags=b&author.display_name=Ann&kind=ESSAY&min_pages=4", "")
	f.Add("PATCH", "/v1/shelves/1/books/2", "validate_only=true", `{"published":"2020-01-01T00:00:00Z"}`)
	f.Add("ARCHIVE", "/v1/archive/a/%2F/b", "", "")
	tc := newLibrary(f, Options{MaxRequestBytes: 4096})
	f.Fuzz(func(t *testing.T, method, path, query, body string) {
		b, vars := tc.Match(method, path)
		if b == nil {
			return
		}
		framed, err := b.Request(vars, query, strings.NewReader(body))
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("not an *Error: %v", err)
		}
		if err == nil && (len(framed) < 5 || int(binary.BigEndian.Uint32(framed[1:5])) != len(framed)-5) {
			t.Fatal("bad frame")
		}
	})
}

// TestErrorDetails: grpc-status-details-bin becomes the details of the
// error body; a detail whose type is unknown is dropped, the rest stay.
func TestErrorDetails(t *testing.T) {
	t.Parallel()
	tc := newLibrary(t, Options{})
	get, _ := tc.Match("GET", "/v1/books/x")
	info, _ := anypb.New(&errdetails.ErrorInfo{Reason: "QUOTA", Domain: "example.com"})
	st := &status.Status{Code: 8, Message: "slow down", Details: []*anypb.Any{{TypeUrl: "type.googleapis.com/nope.Unknown", Value: []byte{1}}, info}}
	wire, _ := proto.Marshal(st)
	resp := grpcResponse(nil, nil)
	resp.Header.Set("Grpc-Status", "8")
	resp.Header.Set("Grpc-Message", "ignored when details say")
	resp.Header.Set("Grpc-Status-Details-Bin", base64.RawStdEncoding.EncodeToString(wire))
	if err := get.Response(resp, func(Code) {}); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	want := `{"code":8,"message":"slow down","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"QUOTA","domain":"example.com"}]}`
	var g, w any
	json.Unmarshal(body, &g)
	json.Unmarshal([]byte(want), &w)
	if resp.StatusCode != 429 || !reflect.DeepEqual(g, w) {
		t.Errorf("got %d %s, want 429 %s", resp.StatusCode, body, want)
	}
}

// FuzzResponse: any upstream body, status, message and details, for a
// unary call and a stream, become an answer or an error, never a panic,
// and no message over the bound is read.
func FuzzResponse(f *testing.F) {
	tc := newLibrary(f, Options{MaxMessageBytes: 1 << 12, Print: PrintOptions{EmitUnpopulated: true}})
	get, _ := tc.Match("GET", "/v1/books/x")
	watch, _ := tc.Match("GET", "/v1/shelves/1/books:watch")
	m, _ := proto.Marshal(dynamicpb.NewMessage(get.Method.Output()))
	frame := append([]byte{0, 0, 0, 0, byte(len(m))}, m...)
	f.Add(frame, "0", "", "", false)
	f.Add(append(frame, frame...), "0", "", "", true)
	f.Add([]byte{}, "5", "no%20such", "", false)
	f.Add([]byte{1, 0, 0, 0, 3, 1, 2, 3}, "0", "", "", true)
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff}, "0", "", "", false)
	f.Add([]byte{}, "8", "x", "CAgSAXg", false)
	f.Fuzz(func(t *testing.T, body []byte, code, msg, details string, stream bool) {
		b := get
		if stream {
			b = watch
		}
		resp := grpcResponse(body, http.Header{"Grpc-Status": {code}, "Grpc-Message": {msg}, "Grpc-Status-Details-Bin": {details}})
		resp.Header.Set("Grpc-Encoding", "gzip")
		n := 0
		if err := b.Response(resp, func(Code) { n++ }); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if n != 1 {
			t.Fatalf("done called %d times", n)
		}
	})
}
