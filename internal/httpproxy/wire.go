package httpproxy

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
)

// The byte-slice writers of the HTTP/1.1 wire, shared by the goroutine
// fast path (which appends into its bufio.Writers' free space) and the
// event-loop engine (which appends into its connections' output buffers):
// the request head sent upstream with attache's edits, the response head
// sent to the app, and attache's own answers.

// Request body framings for appendRequestHead besides a length (>= 0).
const (
	framingChunked int64 = -1 // Transfer-Encoding: chunked
	framingNone    int64 = -2 // no body: a Content-Length: 0 only where one is expected
)

// reqIDs are the identifiers of one request that attache may have made
// (for the upstream and the access log).
type reqIDs struct {
	id  [32]byte // X-Request-Id, when gen
	gen bool
}

// requestID returns the request's X-Request-Id, the app's or attache's.
func (ids *reqIDs) requestID(r *reqHead) string {
	if ids.gen {
		return string(ids.id[:])
	}
	return r.Get("X-Request-Id")
}

// appendRequestHead appends the head of r as sent upstream to ep: the
// route's rewrite and header edits, the cluster's credentials, hop-by-hop
// and Connection-listed headers dropped, X-Forwarded-* (the app at
// clientIP: the X-Forwarded-For the app sent is replaced, not extended, as
// net/http's path does, since attache vouches for no hop before its peer
// (a sticky split reads the app's header before, in pickFor); proto
// is the app connection's scheme, "http" or "https"),
// X-Request-Id and traceparent added when absent (recorded in ids), and
// the body framing (a length, framingChunked or framingNone), up to and
// including the blank line.
func appendRequestHead(b []byte, r *reqHead, x *exchange, epAddr, clientIP, proto string, ids *reqIDs, framing int64) []byte {
	rt := x.route
	creds := x.cluster.opts.Credentials // nil: none
	b = append(b, r.method...)
	b = append(b, ' ')
	if rw := rt.rewrite; rw != nil && rw.Prefix != "" && rt.prefix != "" {
		b = append(b, rw.Prefix...)
		b = append(b, strings.TrimPrefix(r.target, rt.prefix)...)
	} else {
		b = append(b, r.target...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	switch {
	case rt.rewrite != nil && rt.rewrite.Host != "":
		b = append(b, rt.rewrite.Host...)
	case x.hostFrom:
		b = append(b, hostForUpstream(epAddr, "http")...)
	default:
		b = append(b, r.host...)
	}
	b = append(b, "\r\nX-Forwarded-For: "...)
	hasID, hasTrace, te := false, false, false
	for i := range r.fields {
		f := &r.fields[i]
		switch f.kind {
		case fRequestID:
			hasID = hasID || f.value != ""
		case fTraceparent:
			hasTrace = hasTrace || f.value != ""
		case fTrailers:
			te = te || headerHasToken(f.value, "trailers")
		}
	}
	b = append(b, clientIP...)
	b = append(b, "\r\nX-Forwarded-Host: "...)
	b = append(b, r.host...)
	b = append(b, "\r\nX-Forwarded-Proto: "...)
	b = append(b, proto...)
	b = append(b, "\r\n"...)
	if te {
		b = append(b, "Te: trailers\r\n"...)
	}
	for i := range r.fields {
		f := &r.fields[i]
		switch f.kind {
		case fOther, fRequestID, fTraceparent:
		default:
			continue
		}
		if f.kind != fOther && f.value == "" || len(r.tokens) > 0 && r.listed(f.name) || rt.edits(f.name) || creds != nil && creds.Sets(f.name) {
			continue
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	if !hasID {
		if !ids.gen { // a retry sends the same id
			var raw [16]byte
			putRandom(raw[:])
			hex.Encode(ids.id[:], raw[:])
			ids.gen = true
		}
		b = append(b, "X-Request-Id: "...)
		b = append(b, ids.id[:]...)
		b = append(b, "\r\n"...)
	}
	if !hasTrace {
		var raw [24]byte
		putRandom(raw[:])
		b = append(b, "Traceparent: 00-"...)
		b = hex.AppendEncode(b, raw[:16])
		b = append(b, '-')
		b = hex.AppendEncode(b, raw[16:])
		b = append(b, "-01\r\n"...)
	}
	for k, v := range rt.add {
		if creds != nil && creds.Sets(k) {
			continue
		}
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	for _, c := range creds.Headers() {
		b = append(b, c.Name...)
		b = append(b, ": "...)
		b = append(b, c.Value...)
		b = append(b, "\r\n"...)
	}
	switch {
	case framing == framingNone:
		if r.length == 0 || r.method == http.MethodPost || r.method == http.MethodPut || r.method == http.MethodPatch {
			b = append(b, "Content-Length: 0\r\n"...)
		}
	case framing == framingChunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	default:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, framing, 10)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// respFraming is how a response body is framed from the upstream.
type respFraming int

// Response body framings.
const (
	bodyNone respFraming = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

// framingOf is the framing of the response rh to a request of method.
func framingOf(rh *respHead, method string) respFraming {
	switch {
	case method == http.MethodHead || rh.status == 204 || rh.status == 304:
		return bodyNone
	case rh.chunked:
		return bodyChunked
	case rh.length >= 0:
		return bodyLength
	}
	return bodyUntilClose
}

// appendResponseHead appends the head of rh as sent to the app: its
// status line and forwarded header lines, Transfer-Encoding: chunked when
// chunkOut, x-attache-attempts, and the end (see appendHeadEnd; the length,
// if any, is among rh's lines).
func appendResponseHead(b []byte, rh *respHead, chunkOut bool, attempts int, closeAfter, http10 bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(rh.status), 10)
	b = append(b, ' ')
	if len(rh.reason) > 0 {
		b = append(b, rh.reason...)
	} else {
		b = append(b, http.StatusText(rh.status)...)
	}
	b = append(b, "\r\n"...)
	for _, l := range rh.lines {
		line := rh.head[l[0]:l[1]]
		if !rh.listed(line) {
			b = append(b, line...)
		}
	}
	if chunkOut {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	b = append(b, "X-Attache-Attempts: "...)
	b = strconv.AppendInt(b, int64(attempts), 10)
	return appendHeadEnd(b, -1, closeAfter, http10)
}

// appendHeadEnd ends a response head: Content-Length (n >= 0), Connection,
// and the blank line. The head so far ends without its line's CRLF.
func appendHeadEnd(b []byte, n int64, closeAfter, http10 bool) []byte {
	if n >= 0 {
		b = append(b, "\r\nContent-Length: "...)
		b = strconv.AppendInt(b, n, 10)
	}
	if closeAfter {
		b = append(b, "\r\nConnection: close"...)
	} else if http10 {
		b = append(b, "\r\nConnection: keep-alive"...)
	}
	return append(b, "\r\n\r\n"...)
}

// appendError appends attache's own response: status, x-attache-reason,
// x-attache-overloaded when over, x-attache-attempts when attempts >= 0,
// and msg as the body unless head (a HEAD request).
func appendError(b []byte, status int, reason string, over bool, attempts int, closeAfter, http10, head bool, msg string) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Attache-Reason: "...)
	b = append(b, reason...)
	if over {
		b = append(b, "\r\nX-Attache-Overloaded: true"...)
	}
	if attempts >= 0 {
		b = append(b, "\r\nX-Attache-Attempts: "...)
		b = strconv.AppendInt(b, int64(attempts), 10)
	}
	b = appendHeadEnd(b, int64(len(msg)), closeAfter, http10)
	if !head {
		b = append(b, msg...)
	}
	return b
}

// appendBadRequest appends the 400 (505 for another HTTP version) of a
// malformed request, after which the connection closes.
func appendBadRequest(b []byte, why string) []byte {
	status := "400 Bad Request"
	if why == unsupportedVersion {
		status = "505 HTTP Version Not Supported"
	}
	msg := status + ": " + why
	b = append(b, "HTTP/1.1 "...)
	b = append(b, status...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, msg...)
}

// noRouteMessage is the body of the 404 for a request no route matched.
func noRouteMessage(r *reqHead) string {
	return "attache: no route for " + r.method + " " + r.path + "\n"
}

// failMessage is the body of attache's answer to a request it could not
// forward.
func failMessage(reason string, x *exchange) string {
	return "attache: " + reason + " (cluster " + x.cluster.Name() + ")\n"
}
