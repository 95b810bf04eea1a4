package grpcjson

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Error is a request attache refuses itself, answered with Status and a
// google.rpc.Status body of Code and Msg.
type Error struct {
	Status int
	Code   Code
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: InvalidArgument, Msg: fmt.Sprintf(format, args...)}
}

// Request builds the framed gRPC request message (the 5-byte prefix and
// the message) of a request matched to b: vars are the template's values
// from Match, rawQuery the URL's query and body the request body (read up
// to the transcoder's MaxRequestBytes). The body goes into the message as
// the rule's body says ("*": the whole message, a field name: that field,
// none: not read); path variables then set their fields, and, unless the
// body is "*", query parameters the fields neither the path nor the body
// bound (by proto or JSON name, dotted for nested fields, repeated for
// repeated fields; unknown names are ignored, as grpc-gateway does). A
// failure is an *Error (400, or 413 for a body over the bound).
func (b *Binding) Request(vars []string, rawQuery string, body io.Reader) ([]byte, error) {
	t := b.t
	msg := dynamicpb.NewMessage(b.Method.Input())
	if b.body != "" && body != nil {
		data, err := io.ReadAll(io.LimitReader(body, t.maxBody+1))
		if err != nil {
			return nil, err
		}
		if int64(len(data)) > t.maxBody {
			return nil, &Error{Status: http.StatusRequestEntityTooLarge, Code: ResourceExhausted,
				Msg: fmt.Sprintf("request body larger than %d bytes", t.maxBody)}
		}
		if len(bytes.TrimSpace(data)) > 0 {
			if err := b.setBody(msg, data); err != nil {
				return nil, err
			}
		}
	}
	for i, fds := range b.pathFds {
		if err := setPath(msg, fds, []string{vars[i]}); err != nil {
			return nil, badRequest("path variable %q: %v", b.Template.Fields()[i], err)
		}
	}
	if b.body != "*" && rawQuery != "" {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return nil, badRequest("query: %v", err)
		}
		if err := b.setQuery(msg, q); err != nil {
			return nil, err
		}
	}
	payload, err := proto.MarshalOptions{}.Marshal(msg)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	out := make([]byte, 5+len(payload))
	binary.BigEndian.PutUint32(out[1:5], uint32(len(payload)))
	copy(out[5:], payload)
	return out, nil
}

// setBody unmarshals a JSON body into msg, or into its body field.
func (b *Binding) setBody(msg *dynamicpb.Message, data []byte) error {
	if b.bodyFd != nil {
		// The value of one field: unmarshalled as the only member of an
		// object, once it is known to be exactly one JSON value (else
		// `1, "other": 2` would set another field).
		if !json.Valid(data) {
			return badRequest("body: not a JSON value")
		}
		var w bytes.Buffer
		w.Grow(len(data) + len(b.bodyFd.JSONName()) + 8)
		w.WriteString(`{"`)
		w.WriteString(b.bodyFd.JSONName())
		w.WriteString(`":`)
		w.Write(data)
		w.WriteString("}")
		data = w.Bytes()
	}
	if err := b.t.unmarshal.Unmarshal(data, msg); err != nil {
		return badRequest("body: %s", strings.TrimPrefix(err.Error(), "proto: "))
	}
	return nil
}

// setQuery sets the fields named by query parameters.
func (b *Binding) setQuery(msg *dynamicpb.Message, q url.Values) error {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fds := queryField(b.Method.Input(), k)
		if fds == nil || b.bound(fds) {
			continue
		}
		leaf := fds[len(fds)-1]
		if leaf.IsMap() || leaf.Kind() == protoreflect.MessageKind && !wellKnown(leaf.Message()) || leaf.Kind() == protoreflect.GroupKind {
			return badRequest("query parameter %q: field %s is a message", k, leaf.FullName())
		}
		if !leaf.IsList() && len(q[k]) > 1 {
			return badRequest("query parameter %q: %d values for a field that is not repeated", k, len(q[k]))
		}
		if err := setPath(msg, fds, q[k]); err != nil {
			return badRequest("query parameter %q: %v", k, err)
		}
	}
	return nil
}

// bound reports whether a field path is, or is inside, a field the path
// template or the body field sets: the query may not set it again.
func (b *Binding) bound(fds []protoreflect.FieldDescriptor) bool {
	if b.bodyFd != nil && fds[0] == b.bodyFd {
		return true
	}
outer:
	for _, p := range b.pathFds {
		if len(p) > len(fds) {
			continue
		}
		for i := range p {
			if p[i] != fds[i] {
				continue outer
			}
		}
		return true
	}
	return false
}

// queryField resolves a dotted query parameter name in md by proto or
// JSON names; nil when a part names no field or crosses a repeated one.
func queryField(md protoreflect.MessageDescriptor, name string) []protoreflect.FieldDescriptor {
	var fds []protoreflect.FieldDescriptor
	for part := range strings.SplitSeq(name, ".") {
		if md == nil {
			return nil
		}
		fd := md.Fields().ByName(protoreflect.Name(part))
		if fd == nil {
			fd = md.Fields().ByJSONName(part)
		}
		if fd == nil {
			return nil
		}
		fds = append(fds, fd)
		md = nil
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && !wellKnown(fd.Message()) {
			md = fd.Message()
		}
	}
	return fds
}

// setPath sets the field at the end of fds, creating the messages on the
// way, to vals (appended, for a repeated field).
func setPath(msg protoreflect.Message, fds []protoreflect.FieldDescriptor, vals []string) error {
	for _, fd := range fds[:len(fds)-1] {
		msg = msg.Mutable(fd).Message()
	}
	leaf := fds[len(fds)-1]
	if leaf.IsList() {
		l := msg.Mutable(leaf).List()
		for _, s := range vals {
			v, err := parseValue(msg, leaf, s)
			if err != nil {
				return err
			}
			l.Append(v)
		}
		return nil
	}
	v, err := parseValue(msg, leaf, vals[len(vals)-1])
	if err != nil {
		return err
	}
	msg.Set(leaf, v)
	return nil
}

// parseValue is the value of a scalar field (or a well-known message with
// a JSON scalar form) written as text in a path or a query.
func parseValue(msg protoreflect.Message, fd protoreflect.FieldDescriptor, s string) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(s) {
			return protoreflect.Value{}, errors.New("not UTF-8")
		}
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BytesKind:
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(s); err == nil {
				return protoreflect.ValueOfBytes(b), nil
			}
		}
		return protoreflect.Value{}, errors.New("not base64")
	case protoreflect.BoolKind:
		v, err := strconv.ParseBool(s)
		return protoreflect.ValueOfBool(v), numErr(err)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		v, err := strconv.ParseInt(s, 10, 32)
		return protoreflect.ValueOfInt32(int32(v)), numErr(err)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		v, err := strconv.ParseInt(s, 10, 64)
		return protoreflect.ValueOfInt64(v), numErr(err)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		v, err := strconv.ParseUint(s, 10, 32)
		return protoreflect.ValueOfUint32(uint32(v)), numErr(err)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		v, err := strconv.ParseUint(s, 10, 64)
		return protoreflect.ValueOfUint64(v), numErr(err)
	case protoreflect.FloatKind:
		v, err := strconv.ParseFloat(s, 32)
		return protoreflect.ValueOfFloat32(float32(v)), numErr(err)
	case protoreflect.DoubleKind:
		v, err := strconv.ParseFloat(s, 64)
		return protoreflect.ValueOfFloat64(v), numErr(err)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		v, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("%q is not a value of %s", s, fd.Enum().FullName())
		}
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(v)), nil
	case protoreflect.MessageKind:
		v := msg.NewField(fd)
		quoted, _ := json.Marshal(s)
		err := protojson.Unmarshal(quoted, v.Message().Interface())
		if err != nil && json.Valid([]byte(s)) && !strings.ContainsAny(s, "{[\"") {
			v = msg.NewField(fd) // a wrapper's number or bool, unquoted
			err = protojson.Unmarshal([]byte(s), v.Message().Interface())
		}
		if err != nil {
			return protoreflect.Value{}, fmt.Errorf("not a %s", fd.Message().FullName())
		}
		return v, nil
	}
	return protoreflect.Value{}, fmt.Errorf("field kind %s cannot be set from text", fd.Kind())
}

// numErr drops strconv's quoting of the whole input from its error.
func numErr(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return fmt.Errorf("%q: %v", ne.Num, ne.Err)
	}
	return err
}
