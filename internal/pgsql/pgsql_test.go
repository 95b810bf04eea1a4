package pgsql

import (
	"strings"
	"testing"
)

type classifyCase struct {
	name    string
	sql     string
	pin     string
	dealloc bool
}

var classifyCases = []classifyCase{
	// Ordinary statements.
	{"empty", "", "", false},
	{"only spaces", " \t\r\n\f\v", "", false},
	{"select", "SELECT 1", "", false},
	{"select lower", "select * from orders where id = $1", "", false},
	{"insert", "INSERT INTO t (a) VALUES ('SET x = 1')", "", false},
	{"update set clause", "UPDATE t SET a = 1 WHERE b = 2", "", false},
	{"begin commit", "BEGIN; UPDATE t SET a = 1; COMMIT", "", false},
	{"pgbench select", "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;", "", false},
	{"empty statements", ";;; ;", "", false},
	{"with", "WITH x AS (SELECT 1) SELECT * FROM x", "", false},
	{"alter role set", "ALTER ROLE app SET search_path = x", "", false},
	{"alter database set", "ALTER DATABASE d SET work_mem = '64MB'", "", false},
	{"alter system set", "ALTER SYSTEM SET work_mem = '64MB'", "", false},
	{"create function set attribute", "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = x AS 'select 1'", "", false},
	{"notify", "NOTIFY ch, 'SET x'", "", false},
	{"show", "SHOW search_path", "", false},
	{"copy", "COPY t FROM STDIN", "", false},

	// SET and friends.
	{"set", "SET search_path = app", PinSet, false},
	{"set lower", "set statement_timeout to 1000", PinSet, false},
	{"set mixed case", "sEt TimeZone = 'UTC'", PinSet, false},
	{"set session", "SET SESSION work_mem = '8MB'", PinSet, false},
	{"set time zone", "SET TIME ZONE 'Europe/Paris'", PinSet, false},
	{"set names", "SET NAMES 'UTF8'", PinSet, false},
	{"set local", "SET LOCAL work_mem = '8MB'", "", false},
	{"set local lower", "set local statement_timeout = 5", "", false},
	{"set transaction", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "", false},
	{"set transaction snapshot", "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", "", false},
	{"set constraints", "SET CONSTRAINTS ALL DEFERRED", "", false},
	{"set session characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", PinSetSessionCharacteristics, false},
	{"set role", "SET ROLE reporting", PinSetRole, false},
	{"set session role", "SET SESSION ROLE reporting", PinSetRole, false},
	{"set local role", "SET LOCAL ROLE reporting", "", false},
	{"set session authorization", "SET SESSION AUTHORIZATION alice", PinSetSessionAuth, false},
	{"set local session authorization", "SET LOCAL SESSION AUTHORIZATION alice", "", false},
	{"set in transaction block", "BEGIN; SET search_path = x; COMMIT", PinSet, false},
	{"reset", "RESET search_path", PinReset, false},
	{"reset all", "RESET ALL", PinReset, false},
	{"reset role", "RESET ROLE", PinReset, false},
	{"update pg_settings", "UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'", PinUpdateSettings, false},
	{"update pg_catalog.pg_settings", "update pg_catalog . pg_settings set setting = '1' where name = 'work_mem'", PinUpdateSettings, false},
	{"update other settings table", "UPDATE app.pg_settings_copy SET x = 1", "", false},

	// Comments, literals, quoting.
	{"SET inside a string", "SELECT 'SET x = 1'", "", false},
	{"SET after doubled quote", "SELECT 'it''s; SET x = 1'", "", false},
	{"SET after backslash in a standard string", `SELECT 'a\'; SET x = 1`, PinSet, false},
	{"SET inside E string", `SELECT E'a\'; SET x = 1'`, "", false},
	{"SET inside E string lower", `SELECT e'\\'; SET x = 1`, PinSet, false},
	{"SET inside line comment", "SELECT 1 -- ; SET x = 1", "", false},
	{"comment before SET", "-- set the path\nSET search_path = x", PinSet, false},
	{"block comment before SET", "/* hello */ SET search_path = x", PinSet, false},
	{"nested block comment", "/* a /* b */ ; SET x = 1 */ SELECT 1", "", false},
	{"nested block comment then SET", "/* a /* b */ c */ SET x = 1", PinSet, false},
	{"comment between words", "SET/**/LOCAL x = 1", "", false},
	{"comment between SET and LOCAL lines", "SET -- local\n LOCAL x = 1", "", false},
	{"SET in quoted identifier", `SELECT 1 AS "; SET x = 1"`, "", false},
	{"quoted identifier doubled quote", `SELECT 1 AS "a"";SET x=1"`, "", false},
	{"dollar quoted body with SET", "CREATE FUNCTION f() RETURNS void AS $$ BEGIN SET search_path = x; END $$ LANGUAGE plpgsql", "", false},
	{"tagged dollar quote", "CREATE FUNCTION f() RETURNS void AS $body$ SET x = 1; $$ not the end $$; $body$ LANGUAGE sql", "", false},
	{"dollar quote then SET", "SELECT $a$ x $a$; SET x = 1", PinSet, false},
	{"parameter is not a dollar quote", "SELECT $1; SET x = 1", PinSet, false},
	{"identifier with dollar", "SELECT a$b$; SET x = 1", PinSet, false},
	{"do block", "DO $$ BEGIN PERFORM set_config('a', 'b', false); END $$", "", false},
	{"unterminated string", "SELECT '; SET x = 1", "", false},
	{"unterminated comment", "SELECT 1 /* ; SET x = 1", "", false},
	{"unterminated dollar quote", "SELECT $q$ ; SET x = 1", "", false},
	{"unicode string", "SELECT U&'d\\0061t\\+000061'; SET x = 1", PinSet, false},

	{"comment inside SET SESSION AUTHORIZATION", "SET /* who */ SESSION -- now\n AUTHORIZATION bob", PinSetSessionAuth, false},
	{"comment inside CREATE TEMP TABLE", "CREATE/**/TEMP/* x */TABLE t (a int)", PinTempTable, false},
	{"tabs and newlines", "create\ttemp\ntable\r\nt (a int)", PinTempTable, false},
	{"comment hides TEMP", "CREATE /* TEMP */ TABLE t (a int)", "", false},
	{"string hides LOCAL", "SET search_path = 'LOCAL'", PinSet, false},
	{"E string hides ON COMMIT DROP", `CREATE TEMP TABLE t (a text DEFAULT E'\' ON COMMIT DROP')`, PinTempTable, false},
	{"dollar quote hides WITH HOLD", "DECLARE c CURSOR FOR SELECT $$ WITH HOLD $$", "", false},
	{"quoted identifier hides advisory call", `SELECT "pg_advisory_lock(1)"`, "", false},

	// Several statements.
	{"select then set", "select 1; set x=1", PinSet, false},
	{"set then select", "SET x = 1; SELECT 1", PinSet, false},
	{"first pin wins", "LISTEN a; SET x = 1", PinListen, false},
	{"semicolon in parens does not split", "SELECT (1; SET x = 1)", "", false},
	{"stray close paren", "SELECT 1); SET x = 1", PinSet, false},
	{"leading semicolons", ";;SET x = 1", PinSet, false},
	{"rollback then set", "ROLLBACK; SET x = 1", PinSet, false},
	{"set local then set", "BEGIN; SET LOCAL a = 1; SET b = 2; COMMIT", PinSet, false},
	{"set local twice", "BEGIN; SET LOCAL a = 1; SET LOCAL b = 2; COMMIT", "", false},
	{"discard all after select", "SELECT 1; DISCARD ALL", "", true},
	{"declare with hold in transaction", "BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT", PinHoldCursor, false},

	// Temporary objects.
	{"create temp table", "CREATE TEMP TABLE t (a int)", PinTempTable, false},
	{"create temporary table", "create temporary table t (a int)", PinTempTable, false},
	{"create local temp table", "CREATE LOCAL TEMPORARY TABLE t (a int)", PinTempTable, false},
	{"create global temp table", "CREATE GLOBAL TEMP TABLE t (a int)", PinTempTable, false},
	{"create temp table if not exists", "CREATE TEMP TABLE IF NOT EXISTS t (a int)", PinTempTable, false},
	{"create temp table as", "CREATE TEMP TABLE t AS SELECT 1", PinTempTable, false},
	{"create temp view", "CREATE TEMP VIEW v AS SELECT 1", PinTempView, false},
	{"create or replace temp view", "CREATE OR REPLACE TEMP VIEW v AS SELECT 1", PinTempView, false},
	{"create temp recursive view", "CREATE TEMP RECURSIVE VIEW v (n) AS SELECT 1", PinTempView, false},
	{"create temp sequence", "CREATE TEMP SEQUENCE s", PinTempSequence, false},
	{"create table temp_x", "CREATE TABLE temp_x (a int)", "", false},
	{"create table named temp", "CREATE TABLE temp (a int)", "", false},
	{"create unlogged table", "CREATE UNLOGGED TABLE t (a int)", "", false},
	{"create table", "CREATE TABLE t (a int)", "", false},
	{"create index", "CREATE INDEX ON t (a)", "", false},
	{"create temp on commit drop", "CREATE TEMP TABLE t (a int) ON COMMIT DROP", "", false},
	{"create temp on commit drop lower", "create temp table t(a int) on commit drop", "", false},
	{"create temp on commit drop as", "CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1", "", false},
	{"create temp on commit delete rows", "CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS", PinTempTable, false},
	{"create temp on commit preserve rows", "CREATE TEMP TABLE t (a int) ON COMMIT PRESERVE ROWS", PinTempTable, false},
	{"on commit drop in a string", "CREATE TEMP TABLE t (a text DEFAULT 'ON COMMIT DROP')", PinTempTable, false},
	{"on commit drop in the query", "CREATE TEMP TABLE t AS SELECT 1 AS on_commit_drop", PinTempTable, false},
	{"create table in pg_temp", "CREATE TABLE pg_temp.t (a int)", PinTempTable, false},
	{"create table in quoted pg_temp", `CREATE TABLE "pg_temp".t (a int)`, PinTempTable, false},
	{"create table in pg_temp_3", "CREATE TABLE pg_temp_3.t (a int)", PinTempTable, false},
	{"create table in pg_temporary", "CREATE TABLE pg_temporary.t (a int)", "", false},
	{"create table named pg_temp", "CREATE TABLE pg_temp (a int)", "", false},
	{"create function in pg_temp", "CREATE FUNCTION pg_temp.f() RETURNS int AS 'select 1' LANGUAGE sql", PinTempObject, false},
	{"create or replace function in pg_temp", "CREATE OR REPLACE FUNCTION pg_temp.f() RETURNS int AS 'select 1' LANGUAGE sql", PinTempObject, false},
	{"create table in pg_temp on commit drop", "CREATE TABLE pg_temp.t (a int) ON COMMIT DROP", "", false},
	{"explain analyze create temp table as", "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", PinTempTable, false},
	{"explain options create temp table as", "EXPLAIN (ANALYZE, COSTS OFF) CREATE TEMP TABLE t AS SELECT 1", PinTempTable, false},
	{"select into temp", "SELECT 1 AS a INTO TEMP t", PinTempTable, false},
	{"select into temporary table", "SELECT * INTO TEMPORARY TABLE t FROM x", PinTempTable, false},
	{"select into local temp", "SELECT * INTO LOCAL TEMP t FROM x", PinTempTable, false},
	{"select into pg_temp", "SELECT * INTO pg_temp.t FROM x", PinTempTable, false},
	{"select into table pg_temp", "SELECT * INTO TABLE pg_temp.t FROM x", PinTempTable, false},
	{"select into table", "SELECT * INTO t FROM x", "", false},
	{"with select into temp", "WITH a AS (SELECT 1) SELECT * INTO TEMP t FROM a", PinTempTable, false},
	{"insert into table named temp", "INSERT INTO temp VALUES (1)", "", false},
	{"with insert into temp", "WITH a AS (SELECT 1 AS x) INSERT INTO temp SELECT x FROM a", "", false},
	{"merge into temp", "MERGE INTO temp t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "", false},

	{"number then into", "SELECT 1INTO TEMP t", PinTempTable, false},
	{"exponent then into", "SELECT 1.5e-3 INTO TEMP t", PinTempTable, false},
	{"hex number", "SELECT 0x1F, 1_000, .5, 5., 1e5; SET x = 1", PinSet, false},

	// Identifiers named like statements.
	{"column named listen", "SELECT listen FROM t", "", false},
	{"table named listen", "INSERT INTO listen VALUES (1)", "", false},
	{"column named set", `SELECT "set", reset, load FROM prepare`, "", false},
	{"listen", "LISTEN orders", PinListen, false},
	{"listen quoted", `LISTEN "Orders"`, PinListen, false},
	{"unlisten", "UNLISTEN orders", "", false},
	{"unlisten all", "UNLISTEN *", "", false},

	// Prepared statements and cursors.
	{"prepare", "PREPARE q (int) AS SELECT $1", PinPrepare, false},
	{"prepare lower", "prepare q as select 1", PinPrepare, false},
	{"prepare transaction", "PREPARE TRANSACTION 'gid-1'", "", false},
	{"prepare named transaction", "PREPARE transaction AS SELECT 1", PinPrepare, false},
	{"execute", "EXECUTE q (1)", "", false},
	{"deallocate", "DEALLOCATE q", "", false},
	{"deallocate prepare name", "DEALLOCATE PREPARE q", "", false},
	{"deallocate all", "DEALLOCATE ALL", "", true},
	{"deallocate prepare all", "deallocate prepare all", "", true},
	{"deallocate quoted all", `DEALLOCATE "all"`, "", false},
	{"discard all", "DISCARD ALL", "", true},
	{"discard all lower", "discard all;", "", true},
	{"discard plans", "DISCARD PLANS", "", false},
	{"discard temp", "DISCARD TEMP", "", false},
	{"discard sequences", "DISCARD SEQUENCES", "", false},
	{"set then discard all", "SET x = 1; DISCARD ALL", PinSet, true},
	{"discard all in a string", "SELECT 'DISCARD ALL'", "", false},
	{"declare with hold", "DECLARE c CURSOR WITH HOLD FOR SELECT 1", PinHoldCursor, false},
	{"declare options with hold", "DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITH HOLD FOR SELECT 1", PinHoldCursor, false},
	{"declare without hold", "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", "", false},
	{"declare", "DECLARE c CURSOR FOR SELECT 1", "", false},
	{"declare with in query", "DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold", "", false},
	{"load", "LOAD 'auto_explain'", PinLoad, false},

	// Advisory locks.
	{"advisory lock", "SELECT pg_advisory_lock(42)", PinAdvisoryLock, false},
	{"advisory lock shared", "SELECT pg_advisory_lock_shared(1, 2)", PinAdvisoryLock, false},
	{"try advisory lock", "SELECT pg_try_advisory_lock(42)", PinAdvisoryLock, false},
	{"try advisory lock shared", "select PG_TRY_ADVISORY_LOCK_SHARED (42)", PinAdvisoryLock, false},
	{"advisory lock qualified", "SELECT pg_catalog.pg_advisory_lock(42)", PinAdvisoryLock, false},
	{"advisory lock quoted", `SELECT "pg_advisory_lock"(42)`, PinAdvisoryLock, false},
	{"advisory lock quoted upper is another function", `SELECT "PG_ADVISORY_LOCK"(42)`, "", false},
	{"advisory lock in where", "UPDATE jobs SET taken = true WHERE id = 1 AND pg_try_advisory_lock(id)", PinAdvisoryLock, false},
	{"advisory lock in subquery", "SELECT * FROM (SELECT pg_advisory_lock(1)) s", PinAdvisoryLock, false},
	{"advisory lock comment before paren", "SELECT pg_advisory_lock /* x */ (1)", PinAdvisoryLock, false},
	{"xact advisory lock", "SELECT pg_advisory_xact_lock(42)", "", false},
	{"try xact advisory lock", "SELECT pg_try_advisory_xact_lock(42)", "", false},
	{"xact advisory lock shared", "SELECT pg_advisory_xact_lock_shared(42)", "", false},
	{"advisory unlock", "SELECT pg_advisory_unlock(42)", "", false},
	{"advisory lock in string", "SELECT 'pg_advisory_lock(1)'", "", false},
	{"advisory lock in comment", "SELECT 1 /* pg_advisory_lock(1) */", "", false},
	{"advisory lock column", "SELECT pg_advisory_lock FROM t", "", false},
	{"advisory lock in function body", "CREATE FUNCTION f() RETURNS void AS $$ SELECT pg_advisory_lock(1) $$ LANGUAGE sql", "", false},
	{"advisory lock longer name", "SELECT pg_advisory_locks(1)", "", false},

	// set_config.
	{"set_config false", "SELECT set_config('search_path', 'x', false)", PinSetConfig, false},
	{"set_config true", "SELECT set_config('search_path', 'x', true)", "", false},
	{"set_config TRUE", "select SET_CONFIG('a.b', 'x', TRUE)", "", false},
	{"set_config parameter", "SELECT set_config('a.b', 'x', $1)", PinSetConfig, false},
	{"set_config string true", "SELECT set_config('a.b', 'x', 'true')", PinSetConfig, false},
	{"set_config true expression", "SELECT set_config('a.b', 'x', true AND false)", PinSetConfig, false},
	{"set_config nested call args", "SELECT set_config('a.b', concat('x', 'y'), true)", "", false},
	{"set_config nested call args false", "SELECT set_config('a.b', concat('x', 'y'), false)", PinSetConfig, false},
	{"set_config comma in string", "SELECT set_config('a.b', 'x, y', true)", "", false},
	{"set_config two args", "SELECT set_config('a.b', 'x')", PinSetConfig, false},
	{"set_config qualified", "SELECT pg_catalog.set_config('a.b', 'x', false)", PinSetConfig, false},
	{"set_config in from", "SELECT * FROM set_config('a.b', 'x', false)", PinSetConfig, false},
	{"set_config unterminated", "SELECT set_config('a.b', 'x', true", PinSetConfig, false},
	{"set_config nested", "SELECT set_config('a', set_config('b', 'x', true), true)", PinSetConfig, false},
	{"set_config column", "SELECT set_config FROM t", "", false},
	{"set_config in string", "SELECT 'set_config(''a'', ''b'', false)'", "", false},
	{"set_config then select", "SELECT set_config('a.b', 'x', true); SELECT set_config('a.c', 'y', true)", "", false},
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, c := range classifyCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := Classify(c.sql)
			want := Effect{Pin: c.pin, DeallocateAll: c.dealloc}
			if got != want {
				t.Errorf("Classify(%q) = %+v, want %+v", c.sql, got, want)
			}
		})
	}
}

// TestClassifyPrefix: a comment or blank before a statement changes
// nothing, and neither does a trailing semicolon.
func TestClassifyPrefix(t *testing.T) {
	t.Parallel()
	for _, c := range classifyCases {
		want := Classify(c.sql)
		for _, v := range []string{"/* x */ " + c.sql, "-- x\n" + c.sql, "\n\t " + c.sql, c.sql + "\n;"} {
			if got := Classify(v); got != want {
				t.Errorf("Classify(%q) = %+v, want %+v as for %q", v, got, want, c.sql)
			}
		}
	}
}

// TestClassifyFastPath: the head-only reading agrees with reading every
// token.
func TestClassifyFastPath(t *testing.T) {
	t.Parallel()
	for _, c := range classifyCases {
		if got, want := Classify(c.sql), classifyAll(c.sql); got != want {
			t.Errorf("Classify(%q) = %+v, classifyAll = %+v", c.sql, got, want)
		}
	}
}

// TestClassifyNoAlloc: the pooler calls Classify on every Query and Parse.
func TestClassifyNoAlloc(t *testing.T) {
	for _, c := range classifyCases {
		if n := testing.AllocsPerRun(10, func() { Classify(c.sql) }); n != 0 {
			t.Errorf("Classify(%q) allocates %v times, want 0", c.sql, n)
		}
	}
}

// literalOnly turns any text into one comment or literal that holds it.
func literalOnly(s string, how int) string {
	switch how % 5 {
	case 0:
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	case 1:
		return "-- " + strings.NewReplacer("\n", " ", "\r", " ").Replace(s) + "\n"
	case 2:
		// Drop every '/' so no comment opens or closes inside.
		return "/* " + strings.ReplaceAll(s, "/", "") + " */"
	case 3:
		// No "$z..z" of the tag's length in s: the tag cannot end early.
		tag := "$z$"
		for strings.Contains(s, tag[:len(tag)-1]) {
			tag = tag[:len(tag)-1] + "z$"
		}
		return tag + s + tag
	default:
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
}

func FuzzClassify(f *testing.F) {
	for _, c := range classifyCases {
		f.Add(c.sql, uint8(0))
	}
	f.Fuzz(func(t *testing.T, s string, how uint8) {
		if got, want := Classify(s), classifyAll(s); got != want {
			t.Errorf("Classify(%q) = %+v, classifyAll = %+v", s, got, want)
		}
		// A text of only comments and literals (a quoted identifier alone is
		// not a statement any pin needs) leaves nothing behind.
		text := literalOnly(s, int(how)) + " ;\n" + literalOnly(s, int(how)+1)
		if how%5 == 4 {
			text = literalOnly(s, 0) + literalOnly(s, 2)
		}
		if got := Classify(text); got != (Effect{}) {
			t.Errorf("Classify(%q) = %+v, want nothing", text, got)
		}
	})
}

var benchSelect = `SELECT o.id, o.customer_id, o.total, o.created_at, c.name, c.email
FROM orders o JOIN customers c ON c.id = o.customer_id
WHERE o.status = 'open' AND o.created_at > $1 -- recent
ORDER BY o.created_at DESC LIMIT 50`

// The statements of one pgbench TPC-B transaction with the simple
// protocol, as the engine classifies them.
var tpcb = []string{
	"BEGIN;",
	"UPDATE pgbench_accounts SET abalance = abalance + -4352 WHERE aid = 83453;",
	"SELECT abalance FROM pgbench_accounts WHERE aid = 83453;",
	"UPDATE pgbench_tellers SET tbalance = tbalance + -4352 WHERE tid = 37;",
	"UPDATE pgbench_branches SET bbalance = bbalance + -4352 WHERE bid = 4;",
	"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (37, 4, 83453, -4352, CURRENT_TIMESTAMP);",
	"END;",
}

// BenchmarkClassifyTPCB is one TPC-B transaction's statements.
func BenchmarkClassifyTPCB(b *testing.B) {
	for b.Loop() {
		for _, q := range tpcb {
			if Classify(q).Pin != "" {
				b.Fatal(q)
			}
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	for _, bc := range []struct{ name, sql string }{
		{"select200", benchSelect},
		{"pgbench", "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"},
		{"set", "SET search_path = app, public"},
		{"multi", "BEGIN; UPDATE t SET a = 1 WHERE b = 2; SELECT set_config('x.y', 'z', true); COMMIT"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.sql)))
			for b.Loop() {
				Classify(bc.sql)
			}
		})
		b.Run(bc.name+"/every-token", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.sql)))
			for b.Loop() {
				classifyAll(bc.sql)
			}
		})
	}
}
