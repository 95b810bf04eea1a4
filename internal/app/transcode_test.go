package app

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/attache-proxy/attache/internal/grpcjson/grpcjsontest"
	"github.com/attache-proxy/attache/internal/testenv"
)

// transcodeHarness starts a grpc-go Library server and attache with a
// transcoding route to it over h2c.
func transcodeHarness(t *testing.T, extra string) (*harness, string) {
	t.Helper()
	h, base, _ := transcodeHarnessHold(t, extra, nil)
	return h, base
}

// transcodeHarnessHold is transcodeHarness with the channel that lets a
// held stream go on (grpcjsontest.ServeLibrary).
func transcodeHarnessHold(t *testing.T, extra string, env map[string]string) (*harness, string, chan struct{}) {
	t.Helper()
	set := grpcjsontest.LibrarySet(t)
	desc := grpcjsontest.WriteSet(t, set)
	hold := make(chan struct{})
	up := grpcjsontest.ServeLibrary(t, set, hold)
	h := start(t, yamlf(`
listeners:
  - name: api
    address: "127.0.0.1:0"
    protocol: http
    routes:
      - name: library
        match: {prefix: /}
        to: [{cluster: library}]
        timeout: 10s
        grpc_transcode:
          descriptor_set_file: %s
          services: [test.library.v1.Library]
          max_request_bytes: 1024
%s
clusters: [{name: library, endpoints: ["%s"], http: {version: h2c}}]
`, desc, extra, up), env)
	return h, "http://" + h.addr("api"), hold
}

type jsonCase struct {
	name, method, target, body string
	status                     int
	want                       string // JSON, compared as values
}

func doJSON(t *testing.T, c jsonCase, base string) (int, http.Header, []byte) {
	t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, _ := http.NewRequest(c.method, base+c.target, body)
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", c.method, c.target, err)
	}
	return resp.StatusCode, resp.Header, b
}

// nospace drops the spaces protojson may put between tokens (it varies
// them on purpose, per binary).
func nospace(s string) string { return strings.ReplaceAll(s, " ", "") }

func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// TestTranscodeJSONToGRPC: REST/JSON requests through attache reach a
// real grpc-go server as gRPC calls, and come back as JSON, with gRPC
// statuses mapped to HTTP statuses and google.rpc.Status bodies.
func TestTranscodeJSONToGRPC(t *testing.T) {
	t.Parallel()
	h, base := transcodeHarness(t, "")
	big := `{"title":"` + strings.Repeat("x", 2000) + `"}`
	for _, c := range []jsonCase{
		{"path variables", "GET", "/v1/shelves/1/books/2", "", 200,
			`{"name":"shelves/1/books/2","title":"GetBook with_author=false","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""}`},
		{"additional binding and query", "GET", "/v1/books/b7?with_author=true", "", 200,
			`{"name":"b7","title":"GetBook with_author=true","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""}`},
		{"query: repeated, nested, enum, wrapper", "GET", "/v1/shelves/9/books?tags=a&tags=b&page_size=5&author.display_name=Ann&kind=ESSAY&ids=1&ids=2&min_pages=40", "", 200,
			`{"books":[
			  {"name":"shelves/9/books/a","title":"ids=1,2 min_pages=40","pages":"5","tags":[],"kind":"ESSAY","published":null,"author":{"displayName":"Ann","born":0},"cover":""},
			  {"name":"shelves/9/books/b","title":"ids=1,2 min_pages=40","pages":"5","tags":[],"kind":"ESSAY","published":null,"author":{"displayName":"Ann","born":0},"cover":""}],
			 "nextPageToken":"next"}`},
		{"response_body", "GET", "/v1/shelves/9/booklist?tags=a", "", 200,
			`[{"name":"shelves/9/books/a","title":"ids=","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""}]`},
		{"body field", "POST", "/v1/shelves/3/books?book_id=b1", `{"title":"Dune","pages":412,"tags":["sf"],"published":"1965-08-01T00:00:00Z"}`, 200,
			`{"name":"shelves/3/books/b1","title":"Dune","pages":"412","tags":["sf"],"kind":"KIND_UNSPECIFIED","published":"1965-08-01T00:00:00Z","author":null,"cover":""}`},
		{"body field with a nested path variable", "PATCH", "/v1/shelves/3/books/b1?validate_only=true", `{"title":"Dune"}`, 200,
			`{"name":"shelves/3/books/b1","title":"Dune (validated)","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""}`},
		{"body star", "PUT", "/v1/shelves/3/books/b1", `{"title":"Emma","kind":"NOVEL","author":{"displayName":"Austen"}}`, 200,
			`{"name":"shelves/3/books/b1","title":"Emma","pages":"0","tags":[],"kind":"NOVEL","published":null,"author":{"displayName":"Austen","born":0},"cover":""}`},
		{"verb", "POST", "/v1/shelves/3/books/b1:publish", `{}`, 200,
			`{"name":"shelves/3/books/b1","title":"PublishBook with_author=false","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""}`},
		{"custom method, multi-segment variable", "ARCHIVE", "/v1/archive/old/b%2F1", "", 200,
			`{"name":"old/b%2F1","title":"ArchiveBook with_author=false","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""}`},
		{"method without a rule", "POST", "/test.library.v1.Library/Echo", `{"name":"e"}`, 200,
			`{"name":"e","title":"","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""}`},
		{"delete", "DELETE", "/v1/shelves/3/books/b1", "", 200, `{}`},

		{"NOT_FOUND with details", "GET", "/v1/shelves/1/books/missing", "", 404,
			`{"code":5,"message":"no book shelves/1/books/missing","details":[{"@type":"type.googleapis.com/google.rpc.ResourceInfo","resourceType":"book","resourceName":"shelves/1/books/missing","owner":"","description":""}]}`},
		{"PERMISSION_DENIED", "GET", "/v1/shelves/1/books/denied", "", 403, `{"code":7,"message":"not yours","details":[]}`},
		{"UNAUTHENTICATED", "GET", "/v1/shelves/1/books/unauth", "", 401, `{"code":16,"message":"who are you","details":[]}`},
		{"UNAVAILABLE, message escapes", "GET", "/v1/shelves/1/books/unavailable", "", 503, `{"code":14,"message":"try later ünïcode 100%","details":[]}`},
		{"DEADLINE_EXCEEDED", "GET", "/v1/shelves/1/books/slow-deadline", "", 504, `{"code":4,"message":"too slow","details":[]}`},
		{"NOT_FOUND on delete (trailers-only)", "DELETE", "/v1/shelves/1/books/missing", "", 404, `{"code":5,"message":"no such book","details":[]}`},
		{"unknown JSON field", "PUT", "/v1/shelves/3/books/b1", `{"title":"x","colour":"red"}`, 400, ""},
		{"malformed JSON", "PUT", "/v1/shelves/3/books/b1", `{"title":`, 400, ""},
		{"bad query value", "GET", "/v1/shelves/9/books?page_size=ten", "", 400, ""},
		{"oversized body", "PUT", "/v1/shelves/3/books/b1", big, 413, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, hdr, body := doJSON(t, c, base)
			if status != c.status {
				t.Fatalf("status: got %d, want %d (body %s)", status, c.status, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type: got %q, want application/json", ct)
			}
			if c.want == "" { // refused by attache: a google.rpc.Status
				var st struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}
				if json.Unmarshal(body, &st) != nil || st.Code == 0 || st.Message == "" || hdr.Get("X-Attache-Reason") != "grpc transcode" {
					t.Errorf("refusal: got %s (reason %q), want a google.rpc.Status", body, hdr.Get("X-Attache-Reason"))
				}
				if c.status == 400 && st.Code != 3 {
					t.Errorf("code: got %d, want 3 (INVALID_ARGUMENT)", st.Code)
				}
				return
			}
			if !sameJSON(body, []byte(c.want)) {
				t.Errorf("body:\n got %s\nwant %s", body, c.want)
			}
			if c.status == 200 && c.method == "GET" && strings.HasPrefix(c.target, "/v1/shelves/1/books/") && hdr.Get("X-Library-Method") != "GetBook" {
				t.Errorf("response metadata: got %q, want x-library-method GetBook", hdr.Get("X-Library-Method"))
			}
			for k := range hdr {
				if strings.HasPrefix(k, "Grpc-") {
					t.Errorf("gRPC header passed to the JSON client: %s", k)
				}
			}
		})
	}

	// metrics and status
	if got := h.metric(`attache_http_transcode_requests_total{grpc_status="NOT_FOUND",listener="api",method="test.library.v1.Library/GetBook",route="library"}`); got != "1" {
		t.Errorf("NOT_FOUND metric: got %q, want 1", got)
	}
	if got := h.metric(`attache_http_transcode_requests_total{grpc_status="none",listener="api",method="test.library.v1.Library/ReplaceBook",route="library"}`); got != "3" {
		t.Errorf("refused metric: got %q, want 3", got)
	}
	_, st := h.admin("GET", "/status")
	if !strings.Contains(st, `"grpc_transcode"`) || !strings.Contains(st, `"GET /v1/{name=shelves/*/books/*} test.library.v1.Library.GetBook"`) {
		t.Errorf("/status has no grpc_transcode line with bindings:\n%s", st)
	}
	if code, cfg := h.admin("GET", "/config"); code != 200 || !strings.Contains(cfg, "emit_unpopulated") {
		t.Errorf("/config: got %d, without the grpc_transcode block:\n%s", code, cfg)
	}
}

// TestTranscodeServerStreaming: a server stream is one JSON array, each
// message written as it arrives; a stream failing before its first
// message is a mapped error, one failing after it is cut.
func TestTranscodeServerStreaming(t *testing.T) {
	t.Parallel()
	_, base, hold := transcodeHarnessHold(t, "", nil)
	// The first message reaches the client while the server holds the
	// second back: nothing is buffered whole.
	held, err := http.Get(base + "/v1/shelves/4/books:watch?page_size=2&tags=hold")
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan string, 1)
	go func() {
		br := bufio.NewReader(held.Body)
		s, _ := br.ReadString('}') // `[{"name":...,"author":null,"cover":""}`: no nested objects set
		for strings.Count(s, "{") != strings.Count(s, "}") {
			more, err := br.ReadString('}')
			if s += more; err != nil {
				break
			}
		}
		first <- s
		rest, _ := io.ReadAll(br)
		first <- string(rest)
	}()
	select {
	case s := <-first:
		if !strings.HasPrefix(nospace(s), `[{"name":"shelves/4/books/0"`) {
			t.Errorf("first element: got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first message of a held stream did not arrive: the stream is buffered")
	}
	close(hold)
	if rest := nospace(<-first); !strings.HasPrefix(rest, `,{"name":"shelves/4/books/1"`) || !strings.HasSuffix(rest, "]") {
		t.Errorf("rest of the stream: got %q", rest)
	}
	held.Body.Close()

	status, hdr, body := doJSON(t, jsonCase{method: "GET", target: "/v1/shelves/4/books:watch?page_size=3"}, base)
	want := `[{"name":"shelves/4/books/0","title":"watched","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""},
	          {"name":"shelves/4/books/1","title":"watched","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""},
	          {"name":"shelves/4/books/2","title":"watched","pages":"0","tags":[],"kind":"KIND_UNSPECIFIED","published":null,"author":null,"cover":""}]`
	if status != 200 || !sameJSON(body, []byte(want)) || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("stream: got %d %s", status, body)
	}
	if status, _, body := doJSON(t, jsonCase{method: "GET", target: "/v1/shelves/4/books:watch?page_size=0"}, base); status != 200 || string(body) != "[]" {
		t.Errorf("empty stream: got %d %q, want 200 []", status, body)
	}
	if status, _, body := doJSON(t, jsonCase{method: "GET", target: "/v1/shelves/4/books:watch?page_size=3&tags=fail-first"}, base); status != 400 ||
		!sameJSON(body, []byte(`{"code":9,"message":"shelf is locked","details":[]}`)) {
		t.Errorf("stream failing first: got %d %s, want 400 FAILED_PRECONDITION", status, body)
	}
	resp, err := http.Get(base + "/v1/shelves/4/books:watch?page_size=3&tags=fail-after")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err == nil || !strings.HasPrefix(nospace(string(b)), `[{"name":"shelves/4/books/0"`) || strings.HasSuffix(string(b), "]") {
		t.Errorf("stream failing after a message: got %d %q %v, want 200, a cut array and a read error", resp.StatusCode, b, err)
	}
}

// TestTranscodeWirePaths: whichever path serves the connection first
// (the event-loop engine, the goroutine fast path, net/http), a
// transcoding route's request is handed to net/http and transcoded.
func TestTranscodeWirePaths(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"", "goroutine", "off"} {
		t.Run("path="+path, func(t *testing.T) {
			t.Parallel()
			_, base, _ := transcodeHarnessHold(t, "", pathEnv(path))
			for i := 0; i < 3; i++ { // keep-alive: each request on the connection handed over
				status, _, body := doJSON(t, jsonCase{method: "PUT", target: "/v1/shelves/1/books/2", body: `{"title":"T"}`}, base)
				if status != 200 || !strings.Contains(nospace(string(body)), `"title":"T"`) {
					t.Fatalf("request %d: got %d %s", i, status, body)
				}
			}
		})
	}
}

// TestTranscodeTLSUpstream: a cluster of h2 over TLS (http.version 2)
// carries transcoded calls to a grpc-go server with TLS credentials.
func TestTranscodeTLSUpstream(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile, certFile, keyFile := testenv.NewCA(t, "library-ca").Files(t, dir, "127.0.0.1")
	creds, err := credentials.NewServerTLSFromFile(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	set := grpcjsontest.LibrarySet(t)
	desc := grpcjsontest.WriteSet(t, set)
	up := grpcjsontest.ServeLibrary(t, set, nil, grpc.Creds(creds))
	h := start(t, yamlf(`
listeners:
  - name: api
    address: "127.0.0.1:0"
    protocol: http
    routes:
      - match: {prefix: /v1/}
        to: [{cluster: library}]
        grpc_transcode: {descriptor_set_file: %s, services: [test.library.v1.Library]}
clusters: [{name: library, endpoints: ["%s"], http: {version: "2"}, tls: {ca_file: %s, server_name: 127.0.0.1}}]
`, desc, up, caFile), nil)
	status, _, body := doJSON(t, jsonCase{method: "GET", target: "/v1/shelves/1/books/tls?with_author=true"}, "http://"+h.addr("api"))
	if status != 200 || !strings.Contains(nospace(string(body)), `"title":"GetBookwith_author=true"`) {
		t.Errorf("over TLS: got %d %s", status, body)
	}
}

// TestTranscodePassesGRPC: a gRPC client's call on the transcoding route,
// and a path no binding matches, pass through unchanged.
func TestTranscodePassesGRPC(t *testing.T) {
	t.Parallel()
	h, base := transcodeHarness(t, "")
	set := grpcjsontest.LibrarySet(t)
	files, _ := protodesc.NewFiles(set)
	d, _ := files.FindDescriptorByName("test.library.v1.Library.GetBook")
	md := d.(protoreflect.MethodDescriptor)
	conn, err := grpc.NewClient(h.addr("api"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	in := dynamicpb.NewMessage(md.Input())
	protojson.Unmarshal([]byte(`{"name":"shelves/1/books/g"}`), in)
	out := dynamicpb.NewMessage(md.Output())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.Invoke(ctx, "/test.library.v1.Library/GetBook", in, out); err != nil {
		t.Fatalf("gRPC call through a transcoding route: %v", err)
	}
	if got := out.Get(md.Output().Fields().ByName("name")).String(); got != "shelves/1/books/g" {
		t.Errorf("gRPC call: got name %q", got)
	}
	_ = proto.Size(out)
	// no binding: passed on as it came; the gRPC server refuses it.
	resp, err := http.Get(base + "/v2/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Attache-Reason") != "" || resp.StatusCode == 200 {
		t.Errorf("unbound path: got %d %v, want the upstream's own answer", resp.StatusCode, resp.Header)
	}
}

// TestTranscodeCurl: curl as the JSON client, over HTTP/1.1 and h2c.
func TestTranscodeCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	_, base := transcodeHarness(t, "          print_options: {use_proto_names: true, emit_unpopulated: false}")
	for _, proto := range []string{"--http1.1", "--http2-prior-knowledge"} {
		out, err := exec.Command(curl, "-sS", proto, "-X", "POST", "-H", "content-type: application/json",
			"-d", `{"title":"Dune","author":{"display_name":"Herbert"}}`, "-w", "\n%{http_code}",
			base+"/v1/shelves/3/books?book_id=d").CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v: %s", proto, err, out)
		}
		body, code, _ := strings.Cut(string(out), "\n")
		if code != "200" || !sameJSON([]byte(body), []byte(`{"name":"shelves/3/books/d","title":"Dune","author":{"display_name":"Herbert"}}`)) {
			t.Errorf("curl %s: got %s %s", proto, code, body)
		}
		big := `{"title":"` + strings.Repeat("x", 4000) + `"}`
		out, err = exec.Command(curl, "-sS", proto, "-X", "PUT", "-d", big, "-w", "\n%{http_code}", base+"/v1/shelves/3/books/b").CombinedOutput()
		if _, code, _ := strings.Cut(string(out), "\n"); err != nil || code != "413" {
			t.Errorf("curl %s oversized body: got %s %v, want 413", proto, out, err)
		}
		// streaming, read line by line as it comes
		cmd := exec.Command(curl, "-sSN", proto, base+"/v1/shelves/5/books:watch?page_size=2")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		all, _ := io.ReadAll(bufio.NewReader(stdout))
		cmd.Wait()
		if !sameJSON(all, []byte(`[{"name":"shelves/5/books/0","title":"watched"},{"name":"shelves/5/books/1","title":"watched"}]`)) {
			t.Errorf("curl %s stream: got %s", proto, all)
		}
	}
}
