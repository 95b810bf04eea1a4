package pgproxy

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/pgsql"
)

// body encodes msg and returns its type byte and body.
func body(t *testing.T, msg pgproto3.FrontendMessage) (byte, []byte) {
	t.Helper()
	raw, err := msg.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw[0], raw[5:]
}

// The engine's in-place decoding gives consume what pgproto3's Decode
// gives it, and pgproto3's whole value where the statement is named.
func TestEngineDecodeInPlace(t *testing.T) {
	e := &engine{effects: map[string]pgsql.Effect{}}
	cases := []struct {
		msg  pgproto3.FrontendMessage
		want pgproto3.FrontendMessage // the fields consume reads
	}{
		{&pgproto3.Query{String: "SELECT 1"}, &pgproto3.Query{String: "SELECT 1"}},
		{&pgproto3.Query{String: ""}, &pgproto3.Query{}},
		{&pgproto3.Parse{Query: "SELECT $1", ParameterOIDs: []uint32{23}}, &pgproto3.Parse{Query: "SELECT $1"}},
		{&pgproto3.Parse{Name: "s1", Query: "SELECT $1", ParameterOIDs: []uint32{23}}, &pgproto3.Parse{Name: "s1", Query: "SELECT $1", ParameterOIDs: []uint32{23}}},
		{&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}}, &pgproto3.Bind{}},
		{&pgproto3.Bind{DestinationPortal: "p", Parameters: [][]byte{[]byte("1")}}, &pgproto3.Bind{}},
		{&pgproto3.Bind{PreparedStatement: "s1", ParameterFormatCodes: []int16{0}, Parameters: [][]byte{[]byte("1")}, ResultFormatCodes: []int16{1}},
			&pgproto3.Bind{PreparedStatement: "s1", ParameterFormatCodes: []int16{0}, Parameters: [][]byte{[]byte("1")}, ResultFormatCodes: []int16{1}}},
	}
	for _, tc := range cases {
		typ, b := body(t, tc.msg)
		got, err := e.decodeFrontend(typ, b)
		if err != nil {
			t.Errorf("%#v: %v", tc.msg, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("decoded %#v, want %#v", got, tc.want)
		}
	}
	for _, bad := range []struct {
		typ  byte
		body string
	}{
		{'Q', "SELECT 1"},          // no NUL
		{'Q', "SELECT 1\x00x\x00"}, // bytes after it
		{'P', "\x00SELECT 1"},      // the text's NUL missing
		{'B', "\x00"},              // no statement name
	} {
		if m, err := e.decodeFrontend(bad.typ, []byte(bad.body)); err == nil {
			t.Errorf("%c %q: decoded %#v, want an error", bad.typ, bad.body, m)
		}
	}
}

// The engine remembers the effects of unnamed Parse texts by a copy of the
// text (the decoded one shares the read buffer), within its bound.
func TestEngineEffectCache(t *testing.T) {
	e := &engine{effects: map[string]pgsql.Effect{}}
	effect := func(buf []byte) pgsql.Effect {
		m, err := e.decodeFrontend('P', buf)
		if err != nil {
			t.Fatal(err)
		}
		return e.effectOf(m)
	}
	_, buf := body(t, &pgproto3.Parse{Query: "SET search_path = a"})
	for range 2 {
		if got := effect(buf); got.Pin != pgsql.PinSet {
			t.Fatalf("SET: pin %q, want %q", got.Pin, pgsql.PinSet)
		}
	}
	// The read buffer is reused for another text of the same length.
	_, other := body(t, &pgproto3.Parse{Query: "SELECT search_pa, a"})
	copy(buf, other)
	if got := effect(buf); got.Pin != "" {
		t.Errorf("SELECT in the SET's buffer: pin %q, want none", got.Pin)
	}
	_, buf = body(t, &pgproto3.Parse{Query: "SET search_path = a"})
	if got := effect(buf); got.Pin != pgsql.PinSet {
		t.Errorf("SET again: pin %q, want %q", got.Pin, pgsql.PinSet)
	}
	for i := range 3 * maxEffects {
		_, b := body(t, &pgproto3.Parse{Query: fmt.Sprintf("SELECT %d", i)})
		effect(b)
	}
	if len(e.effects) > maxEffects {
		t.Errorf("%d texts remembered, want at most %d", len(e.effects), maxEffects)
	}
}
