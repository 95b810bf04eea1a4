package httpproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/grpcjson"
)

// transcoder is a route's JSON-to-gRPC transcoding (grpc_transcode).
// Routes without one never reach this file: the check is one nil test in
// ServeHTTP, and only the net/http path serves such a route.
type transcoder struct {
	t   *grpcjson.Transcoder
	cfg *GRPCTranscode
	// count is the metric of finished calls by gRPC method and status;
	// nil: none.
	count func(method, code string)
}

// transcodeCall is a request mapped to a gRPC call.
type transcodeCall struct {
	b        *grpcjson.Binding
	done     func(grpcjson.Code) // reports the call's status once
	reported atomic.Bool
}

// end reports a call that got no status (attache answered itself, or the
// stream was cut), unless its answer reported one.
func (c *transcodeCall) end() { c.done(grpcjson.NoStatus) }

// attachTranscoders loads the transcoders of the routes that have
// grpc_transcode; count is the metric (nil: none).
func attachTranscoders(table *Table, l *config.Listener, count func(listener, route, method, code string)) error {
	for i, r := range Options(l).Routes {
		g := r.GRPCTranscode
		if g == nil {
			continue
		}
		t, err := grpcjson.Load(g.DescriptorSetFile, g.Options())
		if err != nil {
			return fmt.Errorf("listener %q route %q: grpc_transcode: %w", l.Name, r.Name, err)
		}
		tc := &transcoder{t: t, cfg: g}
		if count != nil {
			listener, route := l.Name, r.Name
			tc.count = func(method, code string) { count(listener, route, method, code) }
		}
		table.Routes[i].grpc = tc
		table.Routes[i].fast = false // transcoding is on the net/http path
	}
	return nil
}

// transcode maps a request of a transcoding route to its gRPC call and
// returns the request to send upstream: the gRPC call, or r unchanged when
// no binding matches or r is a gRPC call already (so that gRPC clients
// share the route). A request that cannot be mapped is answered here
// (400, or 413 for a body over the bound, with a google.rpc.Status body),
// and ok is false.
func (h *Handler) transcode(w *statusWriter, r *http.Request, x *exchange) (out *http.Request, ok bool) {
	tc := x.route.grpc
	if grpcjson.IsGRPC(r.Header.Get("Content-Type")) {
		return r, true
	}
	b, vars := tc.t.Match(r.Method, r.URL.EscapedPath())
	if b == nil {
		return r, true
	}
	call := &transcodeCall{b: b}
	call.done = func(c grpcjson.Code) {
		if call.reported.CompareAndSwap(false, true) && tc.count != nil {
			tc.count(b.Name(), c.String())
		}
	}
	var body io.Reader
	if r.Body != nil && r.Body != http.NoBody {
		body = r.Body
	}
	framed, err := b.Request(vars, r.URL.RawQuery, body)
	if err != nil {
		call.done(grpcjson.NoStatus)
		var e *grpcjson.Error
		if !errors.As(err, &e) { // the client's body failed
			e = &grpcjson.Error{Status: http.StatusBadRequest, Code: grpcjson.InvalidArgument, Msg: "reading the request body: " + err.Error()}
		}
		x.reason = "grpc transcode"
		msg := tc.t.ErrorBody(e.Code, e.Msg)
		w.Header().Set("X-Attache-Reason", x.reason)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
		if e.Status == http.StatusRequestEntityTooLarge && r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close") // the rest of the body is not read
		}
		w.WriteHeader(e.Status)
		w.Write(msg)
		return nil, false
	}
	x.call = call
	out = r.Clone(r.Context())
	out.Method = http.MethodPost
	out.URL.Path, out.URL.RawPath, out.URL.RawQuery = b.GRPCPath, "", ""
	out.Body = io.NopCloser(bytes.NewReader(framed))
	out.ContentLength = int64(len(framed))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(framed)), nil }
	out.TransferEncoding = nil
	out.Trailer = nil
	for _, k := range []string{"Content-Length", "Content-Encoding", "Accept-Encoding", "Accept", "Expect"} {
		out.Header.Del(k)
	}
	out.Header.Set("Content-Type", "application/grpc")
	out.Header.Set("Te", "trailers")
	return out, true
}

// transcodeResponse is the ModifyResponse of transcoded calls: the gRPC
// answer becomes JSON (grpcjson.Binding.Response).
func transcodeResponse(resp *http.Response) error {
	x := resp.Request.Context().Value(ctxKey{}).(*exchange)
	if x.call == nil {
		return nil // a gRPC client's call on a transcoding route
	}
	return x.call.b.Response(resp, x.call.done)
}

// transcodeStatus is a transcoding route in a listener's /status.
type transcodeStatus struct {
	Route             string   `json:"route"`
	DescriptorSetFile string   `json:"descriptor_set_file"`
	Services          []string `json:"services"`
	Bindings          []string `json:"bindings"` // "GET /v1/{name=shelves/*} pkg.Service.Method"
}

func (tc *transcoder) status(route string) transcodeStatus {
	st := transcodeStatus{Route: route, DescriptorSetFile: tc.cfg.DescriptorSetFile, Services: tc.t.Services()}
	for _, b := range tc.t.Bindings() {
		st.Bindings = append(st.Bindings, b.String())
	}
	return st
}
