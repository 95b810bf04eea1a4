package grpcjson

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// IsGRPC reports whether a Content-Type is gRPC's (application/grpc,
// application/grpc+proto, ...): such requests are gRPC calls already.
func IsGRPC(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "application/grpc" || strings.HasPrefix(mt, "application/grpc+")
}

// Response turns the upstream's answer to a call of b into the JSON
// answer, in place: resp's status, headers and body are replaced and its
// trailers dropped. done is called once with the call's gRPC code (or
// NoStatus) when it is known: at once for a unary call, at the end of the
// body for a stream.
//
// A unary call's message and status are read whole (up to the message
// bound) before anything is answered: OK is 200 with the message as JSON,
// another code its HTTP status (Code.HTTPStatus) with a google.rpc.Status
// body. A server stream is answered when its first message arrives, as a
// JSON array written as messages arrive ("[m1,m2]", Envoy's default); a
// stream that fails before its first message is answered as a failed
// unary call, one that fails after it ends with a read error, so that the
// response is cut (the array stays unclosed) rather than look complete.
//
// An answer that is not gRPC (a status other than 200, another
// Content-Type, and no grpc-status) passes unchanged. A protocol error
// (a message over the bound, a malformed frame, no grpc-status) is
// returned; the caller answers 502.
func (b *Binding) Response(resp *http.Response, done func(Code)) error {
	_, headerStatus := grpcStatus(resp.Header)
	if !headerStatus && (resp.StatusCode != http.StatusOK || !IsGRPC(resp.Header.Get("Content-Type"))) {
		done(NoStatus)
		return nil
	}
	fr := &frameReader{r: resp.Body, max: b.t.maxMsg, encoding: resp.Header.Get("Grpc-Encoding")}
	if headerStatus { // trailers-only: the status is all there is
		st, _ := grpcStatus(resp.Header)
		resp.Body.Close()
		return b.finish(resp, nil, st, done)
	}
	if b.ServerStreaming() {
		first, err := fr.next()
		if err == io.EOF {
			return b.finish(resp, nil, b.trailerStatus(resp), done)
		}
		if err != nil {
			resp.Body.Close()
			done(NoStatus)
			return err
		}
		js, err := b.messageJSON(first)
		if err != nil {
			resp.Body.Close()
			done(NoStatus)
			return err
		}
		b.header(resp, http.StatusOK)
		resp.ContentLength = -1
		resp.Body = &streamBody{b: b, resp: resp, src: resp.Body, fr: fr, pending: append([]byte{'['}, js...), done: done}
		return nil
	}
	var msg []byte
	for {
		m, err := fr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			resp.Body.Close()
			done(NoStatus)
			return err
		}
		if msg != nil {
			resp.Body.Close()
			done(NoStatus)
			return errors.New("grpc: a unary call answered with more than one message")
		}
		msg = m
	}
	return b.finish(resp, msg, b.trailerStatus(resp), done)
}

// trailerStatus reads the status from resp's trailers once its body
// ended, closes the body and drops the trailers (so that they are not
// passed on); nil without a grpc-status.
func (b *Binding) trailerStatus(resp *http.Response) *status.Status {
	st, _ := grpcStatus(resp.Trailer)
	resp.Body.Close()
	resp.Trailer = nil
	return st
}

// finish answers a call whose status st (nil: none came) is known, with
// msg its one message (unary) or nil.
func (b *Binding) finish(resp *http.Response, msg []byte, st *status.Status, done func(Code)) error {
	resp.Trailer = nil
	if st == nil {
		done(NoStatus)
		return errors.New("grpc: the response ended without a grpc-status")
	}
	code := Code(st.Code)
	var body []byte
	switch {
	case code != OK:
		body = b.t.statusJSON(st)
		b.header(resp, code.HTTPStatus())
	case b.ServerStreaming():
		body = []byte("[]")
		b.header(resp, http.StatusOK)
	case msg == nil:
		done(NoStatus)
		return errors.New("grpc: a unary call answered OK without a message")
	default:
		js, err := b.messageJSON(msg)
		if err != nil {
			done(NoStatus)
			return err
		}
		body = js
		b.header(resp, http.StatusOK)
	}
	done(code)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// header rewrites the headers of a response for the JSON client: gRPC's
// own fields go, the upstream's metadata stays.
func (b *Binding) header(resp *http.Response, code int) {
	resp.StatusCode = code
	resp.Status = strconv.Itoa(code) + " " + http.StatusText(code)
	h := resp.Header
	for k := range h {
		if strings.HasPrefix(k, "Grpc-") {
			delete(h, k)
		}
	}
	h.Del("Content-Length")
	h.Del("Trailer")
	h.Set("Content-Type", "application/json")
}

// messageJSON is a response message (its wire form) as JSON: the whole
// message, or the field response_body names.
func (b *Binding) messageJSON(wire []byte) ([]byte, error) {
	t := b.t
	msg := dynamicpb.NewMessage(b.Method.Output())
	if err := (proto.UnmarshalOptions{Resolver: t.resolver}).Unmarshal(wire, msg); err != nil {
		return nil, fmt.Errorf("grpc: response message: %w", err)
	}
	fd := b.respFd
	if fd == nil {
		return marshal(t.marshal, msg)
	}
	if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
		return marshal(t.marshal, msg.Get(fd).Message().Interface())
	}
	// A scalar, list or map: marshalled as the only field of the message,
	// then taken out of the object.
	one := dynamicpb.NewMessage(b.Method.Output())
	if msg.Has(fd) {
		one.Set(fd, msg.Get(fd))
	}
	opts := t.marshal
	opts.Multiline, opts.Indent = false, ""
	if !msg.Has(fd) {
		switch {
		case fd.IsList():
			return []byte("[]"), nil
		case fd.IsMap():
			return []byte("{}"), nil
		}
		opts.EmitUnpopulated = true // a scalar's default: nothing nested
	}
	js, err := marshal(opts, one)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(js, &obj); err != nil {
		return nil, fmt.Errorf("grpc: response_body: %w", err)
	}
	key := fd.JSONName()
	if t.marshal.UseProtoNames {
		key = string(fd.Name())
	}
	return obj[key], nil
}

func marshal(o protojson.MarshalOptions, m proto.Message) ([]byte, error) {
	b, err := o.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("grpc: response message to JSON: %w", err)
	}
	return b, nil
}

// frameReader reads gRPC length-prefixed messages: a flag byte (1:
// compressed with grpc-encoding), a 4-byte big-endian length, the message.
type frameReader struct {
	r        io.Reader
	max      int
	encoding string
	hdr      [5]byte
}

// next returns the next message, io.EOF at a clean end.
func (f *frameReader) next() ([]byte, error) {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return nil, errors.New("grpc: response cut inside a message prefix")
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(f.hdr[1:])
	if uint64(n) > uint64(f.max) {
		return nil, fmt.Errorf("grpc: response message of %d bytes, over the bound of %d", n, f.max)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(f.r, msg); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, errors.New("grpc: response cut inside a message")
		}
		return nil, err
	}
	switch f.hdr[0] {
	case 0:
		return msg, nil
	case 1:
		if f.encoding != "gzip" {
			return nil, fmt.Errorf("grpc: compressed message with grpc-encoding %q", f.encoding)
		}
		zr, err := gzip.NewReader(bytes.NewReader(msg))
		if err != nil {
			return nil, fmt.Errorf("grpc: compressed message: %w", err)
		}
		out, err := io.ReadAll(io.LimitReader(zr, int64(f.max)+1))
		if err != nil {
			return nil, fmt.Errorf("grpc: compressed message: %w", err)
		}
		if len(out) > f.max {
			return nil, fmt.Errorf("grpc: decompressed response message over the bound of %d bytes", f.max)
		}
		return out, nil
	}
	return nil, fmt.Errorf("grpc: message flag %d", f.hdr[0])
}

// streamBody is the JSON array of a server stream, written as messages
// arrive.
type streamBody struct {
	b        *Binding
	resp     *http.Response
	src      io.ReadCloser
	fr       *frameReader
	pending  []byte
	end      bool
	done     func(Code)
	reported bool
}

func (s *streamBody) report(c Code) {
	if !s.reported {
		s.reported = true
		s.done(c)
	}
}

func (s *streamBody) Read(p []byte) (int, error) {
	for len(s.pending) == 0 {
		if s.end {
			return 0, io.EOF
		}
		wire, err := s.fr.next()
		if err == io.EOF {
			st, _ := grpcStatus(s.resp.Trailer)
			s.resp.Trailer = nil
			switch {
			case st == nil:
				s.report(NoStatus)
				return 0, errors.New("grpc: the stream ended without a grpc-status")
			case st.Code != int32(OK):
				s.report(Code(st.Code))
				return 0, fmt.Errorf("grpc: the stream failed: %s: %s", Code(st.Code), st.Message)
			}
			s.report(OK)
			s.pending, s.end = []byte("]"), true
			continue
		}
		if err != nil {
			s.report(NoStatus)
			return 0, err
		}
		js, err := s.b.messageJSON(wire)
		if err != nil {
			s.report(NoStatus)
			return 0, err
		}
		s.pending = append(append(s.pending[:0], ','), js...)
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *streamBody) Close() error {
	s.report(NoStatus) // no-op after the end
	return s.src.Close()
}
