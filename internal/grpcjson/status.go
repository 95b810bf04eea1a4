package grpcjson

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	// The google.rpc error details (ErrorInfo, BadRequest, ...) resolve
	// in error bodies without being in the descriptor set.
	_ "google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Code is a gRPC status code (google.rpc.Code).
type Code int

// NoStatus stands for a call that got no gRPC status: attache refused
// the request, the upstream's answer was not gRPC, or the stream was cut.
const NoStatus Code = -1

// The gRPC status codes.
const (
	OK Code = iota
	Canceled
	Unknown
	InvalidArgument
	DeadlineExceeded
	NotFound
	AlreadyExists
	PermissionDenied
	ResourceExhausted
	FailedPrecondition
	Aborted
	OutOfRange
	Unimplemented
	Internal
	Unavailable
	DataLoss
	Unauthenticated
)

var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// String is the code's google.rpc.Code name ("NOT_FOUND"); codes past
// UNAUTHENTICATED (which grpcStatus reads as UNKNOWN) are their number.
func (c Code) String() string {
	if c == NoStatus {
		return "none"
	}
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return strconv.Itoa(int(c))
}

// HTTPStatus is the HTTP status of a gRPC code, as grpc-gateway's
// HTTPStatusFromCode and Envoy map them.
func (c Code) HTTPStatus() int {
	switch c {
	case OK:
		return http.StatusOK
	case Canceled:
		return 499
	case InvalidArgument, FailedPrecondition, OutOfRange:
		return http.StatusBadRequest
	case DeadlineExceeded:
		return http.StatusGatewayTimeout
	case NotFound:
		return http.StatusNotFound
	case AlreadyExists, Aborted:
		return http.StatusConflict
	case PermissionDenied:
		return http.StatusForbidden
	case Unauthenticated:
		return http.StatusUnauthorized
	case ResourceExhausted:
		return http.StatusTooManyRequests
	case Unimplemented:
		return http.StatusNotImplemented
	case Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError // UNKNOWN, INTERNAL, DATA_LOSS, and codes unknown
}

// grpcStatus reads grpc-status, grpc-message and grpc-status-details-bin
// from h; ok is false without a grpc-status.
func grpcStatus(h http.Header) (st *status.Status, ok bool) {
	v := h.Get("Grpc-Status")
	if v == "" {
		return nil, false
	}
	code, err := strconv.Atoi(v)
	if err != nil || code < 0 || code > int(Unauthenticated) {
		code = int(Unknown) // as gRPC clients read a code they do not know
	}
	st = &status.Status{Code: int32(code), Message: decodeMessage(h.Get("Grpc-Message"))}
	if d := h.Get("Grpc-Status-Details-Bin"); d != "" && code != 0 {
		if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d, "=")); err == nil {
			var full status.Status
			if proto.Unmarshal(b, &full) == nil && full.Code == st.Code {
				st.Details = full.Details
				if full.Message != "" {
					st.Message = full.Message
				}
			}
		}
	}
	return st, true
}

// decodeMessage undoes grpc-message's percent-encoding (gRPC over HTTP/2:
// bytes outside 0x20-0x7E, and %, are %XX).
func decodeMessage(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && unhex(s[i+1]) >= 0 && unhex(s[i+2]) >= 0 {
			b = append(b, byte(unhex(s[i+1])<<4|unhex(s[i+2])))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

// ErrorBody is the JSON google.rpc.Status of an error, written with the
// transcoder's print options; details that do not resolve are dropped.
func (t *Transcoder) ErrorBody(code Code, msg string) []byte {
	return t.statusJSON(&status.Status{Code: int32(code), Message: msg})
}

func (t *Transcoder) statusJSON(st *status.Status) []byte {
	var known []*anypb.Any
	for _, d := range st.Details {
		if _, err := t.resolver.FindMessageByURL(d.GetTypeUrl()); err == nil {
			known = append(known, d)
		}
	}
	st = &status.Status{Code: st.Code, Message: st.Message, Details: known}
	b, err := t.marshal.Marshal(st)
	if err != nil { // a detail that does not parse as its type
		st.Details = nil
		b, _ = t.marshal.Marshal(st)
	}
	return b
}
