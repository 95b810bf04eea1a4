package pgproxy

import (
	"cmp"
	"container/list"
	"fmt"
	"strings"
	"sync"
)

// tracked are the startup parameters attache keeps per client and sets on
// each server connection the client is given (pgbouncer's list, with
// search_path and default_transaction_read_only as in pgbouncer 1.26, and
// extra_float_digits, which JDBC sends). Keys are lower case; values are
// PostgreSQL's spelling.
var tracked = map[string]string{
	"client_encoding":               "client_encoding",
	"datestyle":                     "DateStyle",
	"intervalstyle":                 "IntervalStyle",
	"timezone":                      "TimeZone",
	"standard_conforming_strings":   "standard_conforming_strings",
	"application_name":              "application_name",
	"search_path":                   "search_path",
	"default_transaction_read_only": "default_transaction_read_only",
	"extra_float_digits":            "extra_float_digits",
}

// canonical returns PostgreSQL's spelling of a tracked parameter, or "".
func canonical(name string) string { return tracked[strings.ToLower(name)] }

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	if strings.Contains(s, `\`) {
		return "E'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", "''") + "'"
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// stmt is one distinct prepared statement (query text and parameter
// types), shared by all clients of a Proxy under one server-side name, the
// way pgbouncer names them PGBOUNCER_<n>.
type stmt struct {
	id    uint64
	name  string // on the server: "attache_<id>"
	query string
	oids  []uint32
}

type stmtKey struct {
	query string
	oids  string
}

// registry interns statements by text, so that clients sending the same
// text share one server-side name. It holds at most maxBytes of text
// (maxRegistryBytes when 0): past that it starts again empty. Statements
// handed out stay valid (names are never reused); a text asked for again
// gets a new name, prepared again on the servers.
type registry struct {
	mu       sync.Mutex
	next     uint64
	byText   map[stmtKey]*stmt
	bytes    int // of the texts in byText
	maxBytes int
}

// maxRegistryBytes bounds the statement texts a Proxy keeps interned: the
// distinct statements of applications fit many times over, and a client
// sending ever new texts (literals inlined, or on purpose) does not make
// attache keep them all after it left.
const maxRegistryBytes = 64 << 20

func (r *registry) get(query string, oids []uint32) *stmt {
	k := stmtKey{query: query}
	if len(oids) > 0 {
		k.oids = fmt.Sprint(oids)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.byText[k]
	if s == nil {
		size := len(query) + len(k.oids)
		if r.bytes+size > cmp.Or(r.maxBytes, maxRegistryBytes) {
			clear(r.byText)
			r.bytes = 0
		}
		r.bytes += size
		r.next++
		s = &stmt{id: r.next, name: fmt.Sprintf("attache_%d", r.next), query: query, oids: append([]uint32(nil), oids...)}
		r.byText[k] = s
	}
	return s
}

// lru is the set of statements prepared on one server connection, least
// recently used first out. It is used by one goroutine at a time (whoever
// holds the server connection).
type lru struct {
	max   int
	order *list.List // of *stmt, most recent at the front
	at    map[uint64]*list.Element
}

func newLRU(max int) *lru {
	return &lru{max: max, order: list.New(), at: map[uint64]*list.Element{}}
}

// has reports whether s is prepared, and marks it used.
func (l *lru) has(s *stmt) bool {
	e := l.at[s.id]
	if e != nil {
		l.order.MoveToFront(e)
	}
	return e != nil
}

// add records s as prepared and returns the statement evicted to make
// room, if any.
func (l *lru) add(s *stmt) (evicted *stmt) {
	if l.at[s.id] != nil {
		return nil
	}
	l.at[s.id] = l.order.PushFront(s)
	if l.order.Len() > l.max {
		e := l.order.Back()
		evicted = e.Value.(*stmt)
		l.order.Remove(e)
		delete(l.at, evicted.id)
	}
	return evicted
}

func (l *lru) remove(s *stmt) {
	if e := l.at[s.id]; e != nil {
		l.order.Remove(e)
		delete(l.at, s.id)
	}
}

func (l *lru) clear() {
	l.order.Init()
	clear(l.at)
}

func (l *lru) len() int { return l.order.Len() }
