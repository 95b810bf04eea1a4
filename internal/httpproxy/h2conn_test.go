package httpproxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Client speaks HTTP/2 frame by frame to a listener.
type h2Client struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
	dec *hpack.Decoder
}

// dialH2 connects to addr (with TLS and ALPN h2 if useTLS) and, unless
// raw, sends the preface and an empty SETTINGS and waits for the server's
// SETTINGS.
func dialH2(t *testing.T, addr string, useTLS, raw bool) *h2Client {
	t.Helper()
	var c net.Conn
	var err error
	if useTLS {
		c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	h := &h2Client{t: t, c: c, fr: http2.NewFramer(c, c), dec: hpack.NewDecoder(4096, nil)}
	h.enc = hpack.NewEncoder(&h.buf)
	if raw {
		return h
	}
	io.WriteString(c, clientPreface)
	h.fr.WriteSettings()
	if ev := h.event(); ev != "settings" {
		t.Fatalf("first frame: got %s, want settings", ev)
	}
	h.fr.WriteSettingsAck()
	if ev := h.event(); ev != "settings ack" {
		t.Fatalf("after SETTINGS: got %s, want settings ack", ev)
	}
	return h
}

// block encodes header fields given as name, value pairs.
func (h *h2Client) block(fields ...string) []byte {
	h.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(h.buf.Bytes())
}

// get is the header block of a GET of / (its fields indexed in the
// dynamic table, so that a later block depends on this one).
func (h *h2Client) get(extra ...string) []byte {
	return h.block(append([]string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a", "x-id", "1"}, extra...)...)
}

// post is the header block of a POST of / with a content-length.
func (h *h2Client) post(length string) []byte {
	return h.block(":method", "POST", ":scheme", "http", ":path", "/", ":authority", "a", "content-length", length)
}

// event reads frames until one a test waits for and describes it:
// "settings", "settings ack", "status N", "data N", "rst CODE", "goaway
// CODE", "closed", or "error ...". Window updates and pings are skipped.
func (h *h2Client) event() string {
	for {
		f, err := h.fr.ReadFrame()
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			return "closed"
		case err != nil:
			var op *net.OpError
			if errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset") {
				return "closed"
			}
			return "error " + err.Error()
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				return "settings ack"
			}
			return "settings"
		case *http2.HeadersFrame:
			status := ""
			h.dec.SetEmitFunc(func(hf hpack.HeaderField) {
				if hf.Name == ":status" {
					status = hf.Value
				}
			})
			h.dec.Write(f.HeaderBlockFragment())
			return "status " + status
		case *http2.DataFrame:
			return fmt.Sprint("data ", len(f.Data()))
		case *http2.RSTStreamFrame:
			return "rst " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			return "goaway " + f.ErrCode.String()
		}
	}
}

// TestH2Conformance: what h2spec found wrong with the HTTP/2 server (an
// invalid preface answered in HTTP/1.1, a HEADERS frame over the initial
// SETTINGS_MAX_FRAME_SIZE served, a SETTINGS frame repeating a parameter
// closing the connection, connection-specific fields and TE answered 400
// instead of reset) and the request rules it already kept, on h2c and on
// h2 over TLS. Streams after a reset one must still decode (the HPACK
// state stays in step).
func TestH2Conformance(t *testing.T) {
	p := newProxy(t, true, []string{newEcho(t).addr}, Route{})
	tlsAddr := serveTLS(t, p.srv)
	headers := func(id uint32, block []byte, endStream bool) func(*h2Client) {
		return func(h *h2Client) {
			h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: endStream, EndHeaders: true})
		}
	}
	for _, tc := range []struct {
		name  string
		raw   bool // no preface sent
		send  func(*h2Client)
		want  []string
		after bool // then a GET on stream 3 is answered
	}{
		{name: "invalid preface", raw: true, send: func(h *h2Client) { io.WriteString(h.c, "INVALID CONNECTION PREFACE\r\n\r\n") },
			want: []string{"closed"}},
		{name: "HEADERS over the initial max frame size", send: func(h *h2Client) {
			headers(1, h.get("x-big", strings.Repeat("~", 20000)), true)(h)
		}, want: []string{"goaway FRAME_SIZE_ERROR", "closed"}},
		{name: "SETTINGS repeating INITIAL_WINDOW_SIZE", send: func(h *h2Client) {
			h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
			if ev := h.event(); ev != "settings ack" {
				h.t.Errorf("got %s, want settings ack", ev)
			}
			headers(1, h.get(), true)(h)
		}, want: []string{"status 200", "data 1"}},
		{name: "connection", send: func(h *h2Client) { headers(1, h.get("connection", "keep-alive"), true)(h) },
			want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "keep-alive", send: func(h *h2Client) { headers(1, h.get("keep-alive", "60"), true)(h) },
			want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "proxy-connection", send: func(h *h2Client) { headers(1, h.get("proxy-connection", "close"), true)(h) },
			want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "transfer-encoding", send: func(h *h2Client) { headers(1, h.get("transfer-encoding", "chunked"), true)(h) },
			want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "upgrade", send: func(h *h2Client) { headers(1, h.get("upgrade", "websocket"), true)(h) },
			want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "te gzip", send: func(h *h2Client) { headers(1, h.get("te", "gzip"), true)(h) },
			want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "te trailers", send: func(h *h2Client) { headers(1, h.get("te", "trailers"), true)(h) },
			want: []string{"status 200"}, after: true},
		{name: "connection in a CONTINUATION, padded HEADERS", send: func(h *h2Client) {
			b := h.get("connection", "close")
			h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:3], EndStream: true, PadLength: 7})
			h.fr.WriteContinuation(1, false, b[3:10])
			h.fr.WriteContinuation(1, true, b[10:])
		}, want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "connection with priority", send: func(h *h2Client) {
			h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.get("connection", "close"), EndStream: true, EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 0, Weight: 15}})
		}, want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "upper case name", send: func(h *h2Client) { headers(1, h.get("X-Up", "1"), true)(h) },
			want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "upper case name and connection", send: func(h *h2Client) { headers(1, h.get("X-Up", "1", "connection", "close"), true)(h) },
			want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "empty :path", send: func(h *h2Client) {
			headers(1, h.block(":method", "GET", ":scheme", "http", ":path", "", ":authority", "a"), true)(h)
		}, want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "pseudo-header after a regular one", send: func(h *h2Client) {
			headers(1, h.block(":method", "GET", ":scheme", "http", "x-a", "1", ":path", "/", ":authority", "a"), true)(h)
		}, want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "unknown pseudo-header", send: func(h *h2Client) { headers(1, h.get(":foo", "1"), true)(h) },
			want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "DATA short of content-length", send: func(h *h2Client) {
			headers(1, h.post("10"), false)(h)
			h.fr.WriteData(1, true, []byte("abc"))
		}, want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "padded DATA short of content-length", send: func(h *h2Client) {
			headers(1, h.post("10"), false)(h)
			h.fr.WriteData(1, false, []byte("abc"))
			h.fr.WriteDataPadded(1, true, []byte("def"), make([]byte, 4))
		}, want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "trailers short of content-length", send: func(h *h2Client) {
			headers(1, h.post("10"), false)(h)
			h.fr.WriteData(1, false, []byte("abc"))
			headers(1, h.block("x-trailer", "1"), true)(h)
		}, want: []string{"rst PROTOCOL_ERROR"}, after: true},
		{name: "HEADERS ending the stream, content-length 0", send: func(h *h2Client) { headers(1, h.post("0"), true)(h) },
			want: []string{"status 200"}, after: true},
		{name: "DATA in full over padded frames", send: func(h *h2Client) {
			headers(1, h.post("6"), false)(h)
			h.fr.WriteDataPadded(1, false, []byte("abc"), make([]byte, 2))
			h.fr.WriteData(1, false, []byte("def"))
			h.fr.WriteData(1, true, nil)
		}, want: []string{"status 200", "data 11"}, after: true},
		{name: "DATA and trailers in full", send: func(h *h2Client) {
			headers(1, h.post("3"), false)(h)
			h.fr.WriteData(1, false, []byte("abc"))
			headers(1, h.block("x-trailer", "1"), true)(h)
		}, want: []string{"status 200", "data 8"}, after: true},
		{name: "DATA above content-length", send: func(h *h2Client) {
			headers(1, h.block(":method", "POST", ":scheme", "http", ":path", "/", ":authority", "a", "content-length", "2"), false)(h)
			h.fr.WriteData(1, true, []byte("abc"))
		}, want: []string{"rst PROTOCOL_ERROR"}, after: true},
	} {
		for _, l := range []struct {
			name string
			addr string
			tls  bool
		}{{"h2c", p.addr, false}, {"h2", tlsAddr, true}} {
			t.Run(tc.name+"/"+l.name, func(t *testing.T) {
				h := dialH2(t, l.addr, l.tls, tc.raw)
				tc.send(h)
				for _, want := range tc.want {
					if got := h.event(); got != want {
						t.Fatalf("got %s, want %s", got, want)
					}
				}
				if tc.after {
					h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: h.get(), EndStream: true, EndHeaders: true})
					for ev := h.event(); ev != "status 200"; ev = h.event() {
						if !strings.HasPrefix(ev, "data") && !strings.HasPrefix(ev, "status") && !strings.HasPrefix(ev, "rst") {
							t.Fatalf("next stream: got %s, want status 200", ev)
						}
					}
				}
			})
		}
	}
}

// TestH2TLSFollowsALPN: over TLS the protocol is the one ALPN chose; a
// connection that speaks the other, or h2 on a TLS 1.2 suite HTTP/2
// prohibits, is closed unanswered.
func TestH2TLSFollowsALPN(t *testing.T) {
	p := newProxy(t, true, []string{newEcho(t).addr}, Route{})
	addr := serveTLS(t, p.srv)
	cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
	for _, tc := range []struct {
		name   string
		alpn   []string
		send   string
		reply  string   // what the response begins with; "": closed unanswered
		suites []uint16 // TLS 1.2 with these
	}{
		{"h2 speaking HTTP/1.1", []string{"h2"}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "", nil},
		{"http/1.1 speaking h2", []string{"http/1.1"}, clientPreface, "", nil},
		{"no ALPN speaking h2", nil, clientPreface, "", nil},
		{"http/1.1 speaking HTTP/1.1", []string{"http/1.1"}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200", nil},
		{"no ALPN speaking HTTP/1.0", nil, "GET / HTTP/1.0\r\n\r\n", "HTTP/1.", nil}, // the fast path answers 1.1 (RFC 9110 6.2)
		{"h2 on a TLS 1.2 CBC suite", []string{"h2"}, clientPreface, "", cbc},
		{"http/1.1 on a TLS 1.2 CBC suite", []string{"http/1.1"}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200", cbc},
		{"h2 on TLS 1.2 GCM", []string{"h2"}, clientPreface, "\x00\x00", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: tc.alpn}
			if tc.suites != nil {
				cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, tc.suites
			}
			c, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.send)
			if got, err := readReply(c, len(tc.reply)); got != tc.reply {
				t.Errorf("got %q (%v), want %q", got, err, tc.reply)
			}
		})
	}
}

// TestCleartextGreeting: a cleartext connection whose first line is
// neither HTTP/1.x nor the HTTP/2 preface is closed unanswered; HTTP/1.x
// lines that net/http judges still get its answer.
func TestCleartextGreeting(t *testing.T) {
	for _, fast := range []bool{true, false} {
		p := newProxy(t, fast, []string{newEcho(t).addr}, Route{})
		for _, tc := range []struct {
			send, reply string
		}{
			{"INVALID CONNECTION PREFACE\r\n\r\n", ""},
			{"GET /\r\n\r\n", ""},
			{"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", ""},
			{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "HTTP/1.1 505"},
			{"GET /%61 HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200"}, // net/http's to serve
		} {
			c, br := raw(t, p.addr, tc.send)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if got, err := readReply(br, len(tc.reply)); got != tc.reply {
				t.Errorf("fast %v, %q: got %q (%v), want %q", fast, tc.send, got, err, tc.reply)
			}
			c.Close()
		}
	}
}

// readReply reads the first n bytes of an answer, or with n 0 all of it
// up to the close (a clean close reads as "", anything else as "!error").
func readReply(r io.Reader, n int) (string, error) {
	if n > 0 {
		r = io.LimitReader(r, int64(n))
	}
	b, err := io.ReadAll(r)
	if err != nil && n == 0 {
		return string(b) + "!error", err
	}
	return string(b), err
}

// TestTLSForwardedProto: requests that came over TLS, HTTP/1.1 or h2, are
// sent upstream with X-Forwarded-Proto: https.
func TestTLSForwardedProto(t *testing.T) {
	be := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto"))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go be.Serve(ln)
	t.Cleanup(func() { be.Close() })
	p := newProxy(t, true, []string{ln.Addr().String()}, Route{})
	addr := serveTLS(t, p.srv)
	for _, tc := range []struct {
		name string
		h2   bool
		addr string
		want string
	}{
		{"HTTP/1.1 over TLS", false, "https://" + addr, "https"},
		{"h2 over TLS", true, "https://" + addr, "https"},
		{"cleartext", false, "http://" + p.addr, "http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: tc.h2}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(tc.addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != map[bool]int{false: 1, true: 2}[tc.h2] {
				t.Errorf("protocol: got %s", resp.Proto)
			}
			if string(body) != tc.want {
				t.Errorf("X-Forwarded-Proto: got %q, want %q", body, tc.want)
			}
		})
	}
}

// FuzzClassifyGreeting: the protocol told from a connection's first bytes
// never changes when more bytes arrive.
func FuzzClassifyGreeting(f *testing.F) {
	for _, s := range []string{clientPreface, "PRI * HTTP/2.0\r\n", "GET / HTTP/1.1\r\n", "INVALID CONNECTION PREFACE\r\n\r\n", "\r\n", "GET /\n", "x HTTP/1.1"} {
		f.Add([]byte(s), []byte("\r\nmore"))
	}
	f.Fuzz(func(t *testing.T, b, more []byte) {
		g, ok := classifyGreeting(b)
		if !ok {
			return
		}
		if g2, ok2 := classifyGreeting(append(bytes.Clone(b), more...)); !ok2 || g2 != g {
			t.Errorf("%q: got %d, then %d (%v) with %q appended", b, g, g2, ok2, more)
		}
	})
}

// FuzzH2Conn: the frame filter passes any byte stream through without
// panicking, to its end, and leaves streams without SETTINGS, HEADERS or
// CONTINUATION frames untouched.
func FuzzH2Conn(f *testing.F) {
	seed := func(write func(fr *http2.Framer, enc *hpack.Encoder, buf *bytes.Buffer)) []byte {
		var out, hb bytes.Buffer
		fr := http2.NewFramer(&out, nil)
		write(fr, hpack.NewEncoder(&hb), &hb)
		return out.Bytes()
	}
	f.Add(seed(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	}))
	f.Add(seed(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		for _, kv := range [][2]string{{":method", "GET"}, {":path", "/"}, {"connection", "close"}, {"te", "gzip"}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		b := hb.Bytes()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:4], PadLength: 3})
		fr.WriteContinuation(1, true, b[4:])
		fr.WriteData(1, true, []byte("body"))
	}))
	f.Add(seed(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		fr.WriteData(1, false, []byte("x"))
		fr.WritePing(false, [8]byte{})
	}))
	f.Add(seed(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		for _, kv := range [][2]string{{":method", "POST"}, {":path", "/"}, {"content-length", "10"}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
		fr.WriteDataPadded(1, false, []byte("abc"), []byte{0})
		fr.WriteData(1, true, []byte("def"))
	}))
	f.Add([]byte("0")) // a frame header cut short
	f.Fuzz(func(t *testing.T, frames []byte) {
		in := append([]byte(clientPreface), frames...)
		h := newH2Conn(nil, bufio.NewReaderSize(bytes.NewReader(in), 64))
		out, err := io.ReadAll(h)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("read: %v", err)
		}
		if len(out) > len(in)+(len(in)/9+1)*13 {
			t.Fatalf("%d bytes in, %d out", len(in), len(out))
		}
		if !filtersFrames(frames) && !bytes.Equal(out, in) {
			t.Errorf("no frame to filter, but the bytes changed:\n in %x\nout %x", in, out)
		}
	})
}

// filtersFrames reports whether b holds a frame the filter may rewrite.
func filtersFrames(b []byte) bool {
	for len(b) >= 9 {
		if t := b[3]; t == frameSettings || t == frameHeaders || t == frameContinuation {
			return true
		}
		n := 9 + (int(b[0])<<16 | int(b[1])<<8 | int(b[2]))
		if n > len(b) {
			return false
		}
		b = b[n:]
	}
	return false
}

// TestH2CUpgradeIgnored: an HTTP/1.1 request asking to upgrade to h2c
// (deprecated by RFC 9113 3.1) is served as HTTP/1.1 and reaches the
// upstream without the upgrade: a backend that switched would leave the
// app talking HTTP/2 to it directly, past attache's routes and filters.
// Other upgrade tokens pass.
func TestH2CUpgradeIgnored(t *testing.T) {
	be, _ := serveBackend(t, func(c net.Conn, r *http.Request) bool {
		if up := r.Header.Get("Upgrade"); up != "" {
			fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", up)
			return false
		}
		body := "upgrade=" + r.Header.Get("Upgrade") + ";settings=" + r.Header.Get("Http2-Settings")
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	})
	for _, fast := range []bool{true, false} {
		p := newProxy(t, fast, []string{be}, Route{})
		for _, tc := range []struct {
			upgrade, want string
		}{
			{"h2c", "HTTP/1.1 200 OK"},
			{"H2C", "HTTP/1.1 200 OK"},
			{"websocket", "HTTP/1.1 101 Switching Protocols"},
			{"h2c, websocket", "HTTP/1.1 101 Switching Protocols"},
		} {
			c, br := raw(t, p.addr, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: "+tc.upgrade+"\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
			c.SetDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("fast %v, Upgrade: %s: %v", fast, tc.upgrade, err)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
			if got := "HTTP/1.1 " + resp.Status; got != tc.want || resp.StatusCode == 200 && string(body) != "upgrade=;settings=" {
				t.Errorf("fast %v, Upgrade: %s: got %s %q, want %s, no upgrade upstream", fast, tc.upgrade, got, body, tc.want)
			}
			c.Close()
		}
	}
}
