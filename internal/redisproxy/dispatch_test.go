package redisproxy

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestDispatchAsRedis: AUTH, HELLO AUTH and EVAL's numkeys are read as
// Redis reads them (requirepass: the only user is "default"; numkeys by
// string2ll), with Redis's replies. Nothing here reaches a shard.
func TestDispatchAsRedis(t *testing.T) {
	p := pool(t, []string{"127.0.0.1:1"}) // never dialled
	h := &Handler{Pool: p, Password: "s3cret", Log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		name   string
		authed bool
		cmd    string
		want   string // the reply's start; "forward": sent to a shard
		after  bool   // authenticated afterwards
	}{
		{name: "auth", cmd: "AUTH s3cret", want: "+OK", after: true},
		{name: "auth default user", cmd: "AUTH default s3cret", want: "+OK", after: true},
		{name: "auth other user", cmd: "AUTH admin s3cret", want: "-WRONGPASS"},
		{name: "auth wrong", cmd: "AUTH s3cre", want: "-WRONGPASS"},
		{name: "auth longer", cmd: "AUTH s3crets", want: "-WRONGPASS"},
		{name: "auth no password", cmd: "AUTH", want: "-ERR wrong number of arguments for 'auth' command"},
		{name: "auth too many", cmd: "AUTH default s3cret x", want: "-ERR syntax error"},
		{name: "hello auth other user", cmd: "HELLO 2 AUTH admin s3cret", want: "-WRONGPASS"},
		{name: "hello auth", cmd: "HELLO 2 AUTH default s3cret", want: "*14", after: true},
		{name: "long unknown command", authed: true, after: true, cmd: strings.Repeat("x", 1000),
			want: "-ERR attache: unsupported command '" + strings.Repeat("x", 128) + "'\r\n"},
		{name: "eval", authed: true, after: true, cmd: "EVAL s 1 k", want: "forward"},
		{name: "eval no keys", authed: true, after: true, cmd: "EVAL s 0", want: "forward"},
		{name: "eval plus sign", authed: true, after: true, cmd: "EVAL s +1 k", want: "-ERR value is not an integer or out of range"},
		{name: "eval leading zero", authed: true, after: true, cmd: "EVAL s 01 k", want: "-ERR value is not an integer or out of range"},
		{name: "eval negative", authed: true, after: true, cmd: "EVAL s -1 k", want: "-ERR Number of keys can't be negative"},
		{name: "eval too many keys", authed: true, after: true, cmd: "EVAL s 2 k", want: "-ERR Number of keys can't be greater than number of args"},
		{name: "eval no numkeys", authed: true, after: true, cmd: "EVAL s", want: "-ERR wrong number of arguments for 'eval' command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss := &session{h: h, p: h.Pool, authed: tc.authed}
			var args [][]byte
			for _, a := range strings.Fields(tc.cmd) {
				args = append(args, []byte(a))
			}
			pl := ss.dispatch(args, nil)
			got := "forward"
			if pl.parts == nil {
				got = string(pl.ready)
			}
			if !strings.HasPrefix(got, tc.want) || tc.want != "forward" && !bytes.HasSuffix(pl.ready, []byte("\r\n")) {
				t.Errorf("got %q, want %q...", got, tc.want)
			}
			if ss.authed != tc.after {
				t.Errorf("authenticated afterwards: got %v, want %v", ss.authed, tc.after)
			}
		})
	}
}

// TestFanoutScratchShrinks: the key scratch a session grew for an MGET of
// many keys is not kept for the commands after it.
func TestFanoutScratchShrinks(t *testing.T) {
	p := pool(t, []string{"127.0.0.1:1", "127.0.0.1:2"}) // never dialled
	ss := &session{h: &Handler{Pool: p, Log: slog.New(slog.DiscardHandler)}, p: p, authed: true}
	mget := func(n int) plan {
		args := [][]byte{[]byte("MGET")}
		for i := range n {
			args = append(args, []byte(fmt.Sprint("k", i)))
		}
		return ss.dispatch(args, nil)
	}
	if pl := mget(100000); len(pl.parts) != 2 {
		t.Fatalf("got %d parts, want 2", len(pl.parts))
	}
	mget(10)
	if c := cap(ss.fan.keyPart); c > 4096 {
		t.Errorf("got key scratch of %d after a 10-key MGET, want at most 4096", c)
	}
}
