package pgproxy

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestPassPlainIsHandle checks the undecoded path for server messages
// against handle, for every queue head: where passPlain takes a message,
// the queue, the client's output and the query count must be what handle
// makes of the decoded message.
func TestPassPlainIsHandle(t *testing.T) {
	msgs := []pgproto3.BackendMessage{
		&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.CloseComplete{},
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a"), DataTypeOID: 23, DataTypeSize: 4}}},
		&pgproto3.NoData{}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.EmptyQueryResponse{},
		&pgproto3.PortalSuspended{}, &pgproto3.DataRow{Values: [][]byte{[]byte("1")}},
		&pgproto3.ParameterDescription{ParameterOIDs: []uint32{23}},
		&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "hi"},
		&pgproto3.NotificationResponse{Channel: "c", Payload: "p"},
		&pgproto3.ReadyForQuery{TxStatus: 'T'}, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42P01", Message: "no"},
		&pgproto3.ParameterStatus{Name: "a", Value: "b"},
	}
	heads := []entryKind{eParse, eInjected, eEvict, eBind, eDescribe, eExecute, eClose, eSync, eQuery, eInternal}
	// The queue after the head: a made-up answer next, which both paths
	// must emit right after the message, and one owed response more.
	rest := []entry{{kind: eFakeParse}, {kind: eSync}}
	p := &Proxy{cfg: Config{Mode: TransactionMode}}
	taken := map[byte]bool{}
	for _, m := range msgs {
		raw, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, head := range heads {
			for _, empty := range []bool{false, true} {
				q := append([]entry{{kind: head}}, rest...)
				if empty {
					q = nil
				}
				a := &client{p: p, pool: &pool{p: p}, q: slices.Clone(q)}
				b := &client{p: p, pool: &pool{p: p}, q: slices.Clone(q)}
				s := &server{params: map[string]string{}}
				if !a.passPlain(raw) {
					continue
				}
				taken[raw[0]] = true
				dec, err := (&engine{}).decodeBackend(raw[0], raw[5:])
				if err != nil {
					t.Fatal(err)
				}
				b.handle(s, dec, raw)
				name := fmt.Sprintf("%T with head %d (empty %v)", m, head, empty)
				if !slices.Equal(a.q, b.q) {
					t.Errorf("%s: queue %v, handle's %v", name, a.q, b.q)
				}
				if !bytes.Equal(a.out, b.out) {
					t.Errorf("%s: output %q, handle's %q", name, a.out, b.out)
				}
				if a.pool.st.queries.Load() != b.pool.st.queries.Load() {
					t.Errorf("%s: queries %d, handle's %d", name, a.pool.st.queries.Load(), b.pool.st.queries.Load())
				}
			}
		}
	}
	// The messages that need more than passing on are never taken.
	for _, c := range []byte{'Z', 'E', 'S'} {
		if taken[c] {
			t.Errorf("passPlain took %q", c)
		}
	}
	if !taken['D'] || !taken['C'] || !taken['1'] {
		t.Errorf("passPlain took only %v", taken)
	}
}

// TestPlainFrontend checks which client messages skip decoding: only
// those consume forwards as they are whatever the client prepared.
func TestPlainFrontend(t *testing.T) {
	for _, tc := range []struct {
		msg  pgproto3.FrontendMessage
		kind entryKind
		ok   bool
	}{
		{&pgproto3.Execute{}, eExecute, true},
		{&pgproto3.Execute{Portal: "p", MaxRows: 10}, eExecute, true},
		{&pgproto3.Sync{}, eSync, true},
		{&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}}, eBind, true},
		{&pgproto3.Bind{PreparedStatement: "s1"}, 0, false}, // renamed in transaction mode
		{&pgproto3.Bind{DestinationPortal: "p"}, 0, false},
		{&pgproto3.Describe{ObjectType: 'P'}, eDescribe, true},
		{&pgproto3.Describe{ObjectType: 'S'}, eDescribe, true},
		{&pgproto3.Describe{ObjectType: 'S', Name: "s1"}, 0, false},
		{&pgproto3.Close{ObjectType: 'S'}, eClose, true},
		{&pgproto3.Close{ObjectType: 'S', Name: "s1"}, 0, false}, // answered by attache
		{&pgproto3.Parse{Query: "SELECT 1"}, 0, false},           // lexed for pinning
		{&pgproto3.Query{String: "SELECT 1"}, 0, false},
		{&pgproto3.Flush{}, 0, false},
	} {
		raw, err := tc.msg.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		kind, ok := plainFrontend(raw)
		if ok != tc.ok || ok && kind != tc.kind {
			t.Errorf("%T %+v: got %d %v, want %d %v", tc.msg, tc.msg, kind, ok, tc.kind, tc.ok)
		}
	}
}
