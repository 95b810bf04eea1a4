package main

import (
	"errors"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	events := []event{
		{t0: at(0), t1: at(0), kind: "reload", arg: "hup-1"},
		{t0: at(1000), t1: at(1100), kind: "kill-kill", arg: "s1"},
		{t0: at(2000), t1: at(2000), kind: "up", arg: "s1"},
		{t0: at(9000), t1: at(9500), kind: "kill-term", arg: "s2"},
		{t0: at(11000), t1: at(11000), kind: "up", arg: "s2"},
	}
	shardErr := errors.New("ERR attache: shard s1 (127.0.0.1:1): dial tcp: connection refused")
	tests := []struct {
		name       string
		start, end int
		err        error
		want       string
	}{
		{"in flight at a SIGKILL", 900, 1050, errors.New("EOF"), "kill"},
		{"in flight at a SIGTERM until the process exited", 9400, 9450, errors.New("EOF"), "term"},
		{"shard down, its own error", 1500, 1510, shardErr, "down"},
		{"shard down, within grace after up", 4500, 4510, shardErr, "down"},
		{"shard down, after grace", 5500, 5510, shardErr, "other"},
		{"shard down, another error", 1500, 1510, errors.New("EOF"), "other"},
		{"no fault near", 7000, 7010, errors.New("EOF"), "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := classify([]result{{start: at(tt.start), end: at(tt.end), err: tt.err}}, events,
				100*time.Millisecond, 3*time.Second, expectedDown("redis"))
			got := map[bool]string{c.term == 1: "term", c.kill == 1: "kill", c.down == 1: "down", c.other == 1: "other"}[true]
			if c.failed != 1 || got != tt.want {
				t.Errorf("got %+v (%s), want one %s", c, got, tt.want)
			}
		})
	}
}

func TestExpectedDownOnlyRedis(t *testing.T) {
	e := event{kind: "kill-kill", arg: "w0"}
	for _, proto := range []string{"tcp", "http", "postgres"} {
		if expectedDown(proto)(errors.New("shard w0 (x): refused"), e) {
			t.Errorf("%s: got expected, want unexpected: only redis expects failures while a backend is down", proto)
		}
	}
}
