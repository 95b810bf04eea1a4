// Package pgsql tells what a PostgreSQL query text does to the session it
// runs in, so that a transaction-mode pooler knows when a client must keep
// its server connection (be pinned to it) and when server-side prepared
// statements are gone.
//
// It reads statement heads with a lexer that knows PostgreSQL's comments
// (-- and nested /* */), string literals ('..', E'..', $tag$..$tag$) and
// quoted identifiers; it never guesses from substrings. It is a classifier,
// not a parser: a text PostgreSQL would reject may get any answer, because
// the server runs none of a query string that fails to parse.
//
// What pins and why is in docs/postgres-pinning.md. In short: a statement
// pins when what it leaves behind outlives the transaction that ran it.
// Code the server runs but the text does not show (function bodies, DO
// blocks, EXECUTE of a string inside PL/pgSQL) is not seen.
//
// Classify is safe for concurrent use and allocates nothing.
package pgsql

import "strings"

// Effect is what a query string leaves behind in the session, outside the
// transaction that ran it. The zero value means nothing.
type Effect struct {
	// Pin is "" when the text leaves no session state; else the kind of the
	// first statement that does, one of the Pin* constants.
	Pin string
	// DeallocateAll is set when the text contains DISCARD ALL or
	// DEALLOCATE [PREPARE] ALL: the session's server-side prepared
	// statements are gone.
	DeallocateAll bool
}

// The statement kinds in Effect.Pin.
const (
	PinSet                       = "SET"
	PinSetRole                   = "SET ROLE"
	PinSetSessionAuth            = "SET SESSION AUTHORIZATION"
	PinSetSessionCharacteristics = "SET SESSION CHARACTERISTICS"
	PinReset                     = "RESET"
	PinTempTable                 = "CREATE TEMP TABLE"
	PinTempView                  = "CREATE TEMP VIEW"
	PinTempSequence              = "CREATE TEMP SEQUENCE"
	PinTempObject                = "CREATE TEMP" // another object created in pg_temp, e.g. a function
	PinAdvisoryLock              = "advisory lock"
	PinListen                    = "LISTEN"
	PinPrepare                   = "PREPARE"
	PinHoldCursor                = "DECLARE WITH HOLD"
	PinLoad                      = "LOAD"
	PinSetConfig                 = "set_config"
	PinUpdateSettings            = "UPDATE pg_settings"
)

// Classify looks at every statement in sql (a simple Query may hold several,
// separated by ';') and returns their combined effect.
func Classify(sql string) Effect {
	if !mayNeedBody(sql) {
		// One statement, no pinning function, no SELECT INTO TEMP: only
		// the head can pin.
		l := lexer{s: sql}
		t := l.next()
		var st stmt
		if st.classifyHead(sql, t); !st.head {
			return Effect{}
		}
		pin, dealloc := headEffect(sql[t.start:])
		return Effect{Pin: pin, DeallocateAll: dealloc}
	}
	return classifyAll(sql)
}

// mayNeedBody reports whether sql may hold more than one statement, a call
// of a pinning function or a SELECT INTO TEMP: whether it holds a ';' before
// its trailing blanks, "_lock", "_config" or "temp" in any case, inside
// literals and comments or not. When it does not, the lexer need read only
// the head of the statement. The test is a filter that can only send a
// text to the slower full reading; strings.IndexByte makes it a few times
// cheaper than lexing the whole text.
func mayNeedBody(s string) bool {
	if i := strings.IndexByte(s, ';'); i >= 0 {
		for _, c := range []byte(s[i+1:]) {
			if !isSpace(c) && c != ';' {
				return true
			}
		}
	}
	for i := 0; ; {
		j := strings.IndexByte(s[i:], '_')
		if j < 0 {
			break
		}
		i += j + 1
		if hasFold(s[i:], "lock") || hasFold(s[i:], "config") {
			return true
		}
	}
	for _, p := range []byte{'p', 'P'} {
		for i := 0; ; {
			j := strings.IndexByte(s[i:], p)
			if j < 0 {
				break
			}
			i += j + 1
			if i >= 4 && hasFold(s[i-4:], "tem") {
				return true
			}
		}
	}
	return false
}

// hasFold reports whether s starts with prefix (lower case), ignoring
// ASCII case.
func hasFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if s[i]|0x20 != prefix[i] {
			return false
		}
	}
	return true
}

// classifyAll reads every token of sql.
func classifyAll(sql string) Effect {
	var e Effect
	l := lexer{s: sql}
	var st stmt
	st.reset()
	for {
		t := l.next()
		if t.kind == tEOF || st.depth == 0 && t.punct(sql, ';') {
			st.finish(sql, t.start, &e)
			if t.kind == tEOF {
				return e
			}
			st.reset()
			continue
		}
		st.feed(sql, t)
	}
}

// Function calls that pin wherever they appear.
const (
	fnNone = iota
	fnAdvisory
	fnSetConfig
)

// into: where a SELECT ... INTO clause is.
const (
	intoNone   = iota
	intoStart  // after INTO
	intoTempKw // after INTO LOCAL|GLOBAL: TEMP must follow
	intoTable  // after INTO TABLE
	intoPgTemp // after INTO [TABLE] pg_temp: a '.' makes it a temp table
)

// stmt is the state of one pass over one statement. Head keywords that need
// a closer look mark the statement for headEffect when it ends; calls of
// pinning functions and SELECT ... INTO TEMP are found on the way, since
// they may be anywhere in it.
type stmt struct {
	n          int // tokens seen
	start      int // offset of the first token
	depth      int // parenthesis depth, never below 0
	head       bool
	selectLike bool // SELECT, WITH, VALUES, TABLE, EXPLAIN: may hold SELECT ... INTO
	lastSelect bool // the last verb at depth 0 was SELECT
	into       int
	fn         int    // the previous token names a pinning function
	fnPin      string // pin found by function calls or SELECT INTO
	cfgDepth   int    // depth of an open set_config( call, -1 when none
	cfgCommas  int
	cfgArg     int  // tokens in its third argument
	cfgTrue    bool // the third argument starts with TRUE
}

func (st *stmt) reset() {
	*st = stmt{cfgDepth: -1}
}

func (st *stmt) pin(kind string) {
	if st.fnPin == "" {
		st.fnPin = kind
	}
}

func (st *stmt) feed(s string, t token) {
	if st.n == 0 {
		st.start = t.start
		st.classifyHead(s, t)
	}
	st.n++

	if fn := st.fn; fn != fnNone {
		st.fn = fnNone
		if t.punct(s, '(') {
			switch {
			case fn == fnAdvisory:
				st.pin(PinAdvisoryLock)
			case st.cfgDepth >= 0:
				st.pin(PinSetConfig) // nested set_config: not worth following
			default:
				st.cfgDepth, st.cfgCommas, st.cfgArg, st.cfgTrue = st.depth, 0, 0, false
			}
		}
	}

	// The third argument of an open set_config call, if it is exactly TRUE,
	// makes the setting local to the transaction.
	if st.cfgDepth >= 0 && st.cfgCommas == 2 && st.depth > st.cfgDepth &&
		!(st.depth == st.cfgDepth+1 && (t.punct(s, ')') || t.punct(s, ','))) {
		st.cfgArg++
		if st.cfgArg == 1 && t.is(s, "TRUE") {
			st.cfgTrue = true
		}
	}

	switch t.kind {
	case tPunct:
		switch s[t.start] {
		case '(':
			st.depth++
		case ')':
			if st.depth > 0 {
				st.depth--
			}
			if st.cfgDepth >= 0 && st.depth == st.cfgDepth {
				if st.cfgCommas != 2 || st.cfgArg != 1 || !st.cfgTrue {
					st.pin(PinSetConfig)
				}
				st.cfgDepth = -1
			}
		case ',':
			if st.cfgDepth >= 0 && st.depth == st.cfgDepth+1 {
				st.cfgCommas++
			}
		}
	case tWord, tQIdent:
		switch n := t.end - t.start; {
		case n >= 10 && n <= 29:
			if t.name(s, "pg_advisory_lock") || t.name(s, "pg_advisory_lock_shared") ||
				t.name(s, "pg_try_advisory_lock") || t.name(s, "pg_try_advisory_lock_shared") {
				st.fn = fnAdvisory
			} else if t.name(s, "set_config") {
				st.fn = fnSetConfig
			}
		}
	}

	if st.selectLike && st.depth == 0 {
		st.selectInto(s, t)
	}
}

// selectInto follows SELECT ... INTO [LOCAL|GLOBAL] TEMP|TEMPORARY [TABLE]
// name, and INTO [TABLE] pg_temp.name, at depth 0: both create a temporary
// table that lasts for the session.
func (st *stmt) selectInto(s string, t token) {
	switch st.into {
	case intoStart:
		switch {
		case t.is(s, "LOCAL") || t.is(s, "GLOBAL"):
			st.into = intoTempKw
			return
		case t.is(s, "TEMP") || t.is(s, "TEMPORARY"):
			st.pin(PinTempTable)
		case t.is(s, "TABLE"):
			st.into = intoTable
			return
		case isPgTemp(s, t):
			st.into = intoPgTemp
			return
		}
	case intoTempKw:
		if t.is(s, "TEMP") || t.is(s, "TEMPORARY") {
			st.pin(PinTempTable)
		}
	case intoTable:
		if isPgTemp(s, t) {
			st.into = intoPgTemp
			return
		}
	case intoPgTemp:
		if t.punct(s, '.') {
			st.pin(PinTempTable)
		}
	}
	st.into = intoNone
	switch {
	case t.is(s, "SELECT"):
		st.lastSelect = true
	case t.is(s, "INSERT") || t.is(s, "UPDATE") || t.is(s, "DELETE") || t.is(s, "MERGE"):
		st.lastSelect = false
	case t.is(s, "INTO"):
		if st.lastSelect {
			st.into = intoStart
		}
	}
}

// classifyHead looks at the first token of a statement.
func (st *stmt) classifyHead(s string, t token) {
	if t.kind != tWord {
		return
	}
	switch t.end - t.start {
	case 3:
		st.head = t.is(s, "SET")
	case 4:
		st.head = t.is(s, "LOAD")
		st.selectLike = t.is(s, "WITH")
	case 5:
		st.head = t.is(s, "RESET")
		st.selectLike = t.is(s, "TABLE")
	case 6:
		st.head = t.is(s, "CREATE") || t.is(s, "LISTEN") || t.is(s, "UPDATE")
		st.selectLike = t.is(s, "SELECT") || t.is(s, "VALUES")
	case 7:
		st.head = t.is(s, "DECLARE") || t.is(s, "PREPARE") || t.is(s, "DISCARD") || t.is(s, "EXPLAIN")
		st.selectLike = t.is(s, "EXPLAIN")
	case 10:
		st.head = t.is(s, "DEALLOCATE")
	}
}

// finish ends the statement s[st.start:end] and adds its effect to e.
func (st *stmt) finish(s string, end int, e *Effect) {
	if st.n == 0 {
		return
	}
	if st.cfgDepth >= 0 {
		st.pin(PinSetConfig) // never closed: not literally true
	}
	var pin string
	if st.head {
		var dealloc bool
		pin, dealloc = headEffect(s[st.start:end])
		e.DeallocateAll = e.DeallocateAll || dealloc
	}
	if pin == "" {
		pin = st.fnPin
	}
	if e.Pin == "" {
		e.Pin = pin
	}
}

// isPgTemp reports whether t names the session's temporary schema: pg_temp,
// or pg_temp_N spelled out.
func isPgTemp(s string, t token) bool {
	if t.name(s, "pg_temp") {
		return true
	}
	a, b := t.start, t.end
	if t.kind == tQIdent {
		a, b = a+1, b-1
	}
	if b-a <= 8 || !(token{tWord, a, a + 8}).name(s, "pg_temp_") {
		return false
	}
	for i := a + 8; i < b; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// headEffect reads the head of one statement that starts with a keyword
// worth a closer look.
func headEffect(s string) (pin string, deallocAll bool) {
	l := lexer{s: s}
	t := l.next()
	switch {
	case t.is(s, "SET"):
		return setEffect(&l, s), false
	case t.is(s, "RESET"):
		// RESET x and RESET ALL put parameters back to the values this
		// server connection started with, which need not be the values
		// this client started with (the pooler applies the client's
		// startup parameters with SET on a shared connection). The
		// client's session now has state of that one connection: pin it,
		// and server_reset_query cleans up when the client leaves.
		return PinReset, false
	case t.is(s, "CREATE"):
		return createEffect(&l, s), false
	case t.is(s, "EXPLAIN"):
		// EXPLAIN ANALYZE runs its statement: CREATE TABLE AS may be temp.
		t = l.next()
		if t.punct(s, '(') {
			for depth := 1; depth > 0 && t.kind != tEOF; {
				t = l.next()
				if t.punct(s, '(') {
					depth++
				} else if t.punct(s, ')') {
					depth--
				}
			}
			t = l.next()
		}
		for t.is(s, "ANALYZE") || t.is(s, "ANALYSE") || t.is(s, "VERBOSE") {
			t = l.next()
		}
		if t.is(s, "CREATE") {
			return createEffect(&l, s), false
		}
	case t.is(s, "DECLARE"):
		// DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL]
		// CURSOR [WITH|WITHOUT HOLD] FOR query: a holdable cursor outlives
		// its transaction.
		for t = l.next(); t.kind != tEOF && !t.is(s, "FOR"); t = l.next() {
			if t.is(s, "WITH") && l.next().is(s, "HOLD") {
				return PinHoldCursor, false
			}
		}
	case t.is(s, "LISTEN"):
		return PinListen, false
	case t.is(s, "PREPARE"):
		// PREPARE TRANSACTION 'gid' hands the transaction to the server:
		// nothing is left in the session.
		if t = l.next(); t.is(s, "TRANSACTION") && l.next().kind == tString {
			return "", false
		}
		return PinPrepare, false
	case t.is(s, "LOAD"):
		return PinLoad, false
	case t.is(s, "UPDATE"):
		// Updating the pg_settings view is set_config(name, value, false).
		t = l.next()
		if t.is(s, "ONLY") {
			t = l.next()
		}
		if t.name(s, "pg_catalog") {
			if !l.next().punct(s, '.') {
				return "", false
			}
			t = l.next()
		}
		if t.name(s, "pg_settings") {
			return PinUpdateSettings, false
		}
	case t.is(s, "DISCARD"):
		// DISCARD ALL leaves nothing behind; DISCARD PLANS, SEQUENCES and
		// TEMP only remove state.
		return "", l.next().is(s, "ALL")
	case t.is(s, "DEALLOCATE"):
		t = l.next()
		if t.is(s, "PREPARE") {
			t = l.next()
		}
		return "", t.is(s, "ALL")
	}
	return "", false
}

// setEffect reads what follows SET.
func setEffect(l *lexer, s string) string {
	t := l.next()
	switch {
	case t.is(s, "LOCAL"):
		// SET LOCAL lasts until the end of the transaction.
		return ""
	case t.is(s, "TRANSACTION") || t.is(s, "CONSTRAINTS"):
		// SET TRANSACTION (also ... SNAPSHOT) and SET CONSTRAINTS apply to
		// the current transaction only.
		return ""
	case t.is(s, "ROLE"):
		return PinSetRole
	case t.is(s, "SESSION"):
		switch t = l.next(); {
		case t.is(s, "AUTHORIZATION"):
			return PinSetSessionAuth
		case t.is(s, "CHARACTERISTICS"):
			// SET SESSION CHARACTERISTICS AS TRANSACTION ... sets
			// default_transaction_isolation and friends for the session:
			// it persists, unlike SET TRANSACTION.
			return PinSetSessionCharacteristics
		case t.is(s, "ROLE"):
			return PinSetRole
		}
	}
	return PinSet
}

// createEffect reads what follows CREATE: a temporary table, view or
// sequence (TEMP, or created in pg_temp) pins, except a table that is
// dropped at commit.
func createEffect(l *lexer, s string) string {
	t := l.next()
	if t.is(s, "OR") { // OR REPLACE
		l.next()
		t = l.next()
	}
	if t.is(s, "GLOBAL") || t.is(s, "LOCAL") {
		t = l.next()
	}
	temp := false
	if t.is(s, "TEMP") || t.is(s, "TEMPORARY") {
		temp = true
		t = l.next()
	}
	if t.is(s, "UNLOGGED") || t.is(s, "RECURSIVE") {
		t = l.next()
	}
	kind := PinTempObject
	switch {
	case t.is(s, "TABLE"):
		kind = PinTempTable
	case t.is(s, "VIEW"):
		kind = PinTempView
	case t.is(s, "SEQUENCE"):
		kind = PinTempSequence
	}
	// The first name: pg_temp.x makes any of them temporary.
	t = l.next()
	if t.is(s, "IF") { // IF NOT EXISTS
		l.next()
		l.next()
		t = l.next()
	}
	if !temp && isPgTemp(s, t) && l.next().punct(s, '.') {
		temp = true
	}
	if !temp {
		return ""
	}
	if kind != PinTempTable {
		return kind
	}
	// ON COMMIT DROP, at depth 0 before AS: the table does not outlive the
	// transaction (the implicit one, outside a transaction block).
	depth, on := 0, 0
	for t = l.next(); t.kind != tEOF; t = l.next() {
		switch {
		case t.punct(s, '('):
			depth++
		case t.punct(s, ')'):
			depth--
		case depth != 0:
		case t.is(s, "AS"):
			return kind
		case t.is(s, "ON"):
			on = 1
			continue
		case on == 1 && t.is(s, "COMMIT"):
			on = 2
			continue
		case on == 2 && t.is(s, "DROP"):
			return ""
		}
		on = 0
	}
	return kind
}
