package pgproxy

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// simpleQuery runs one query returning one text value.
func simpleQuery(t *testing.T, s *Session, sql string) string {
	t.Helper()
	s.FE.Send(&pgproto3.Query{String: sql})
	if err := s.FE.Flush(); err != nil {
		t.Fatal(err)
	}
	var val string
	for {
		msg, err := s.FE.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			val = string(m.Values[0])
		case *pgproto3.ErrorResponse:
			t.Fatalf("%s: %s", sql, m.Message)
		case *pgproto3.ReadyForQuery:
			return val
		}
	}
}
