package testenv

import (
	"strconv"
	"testing"
)

func TestConsulAgent(t *testing.T) {
	c := Consul(t)
	addr := FreePort(t)
	c.Register("web", "web-1", addr)
	var passing []any
	c.Do("GET", "/v1/health/service/web?passing", nil, &passing)
	if len(passing) != 0 {
		t.Fatalf("passing before PassTTL: got %d, want 0", len(passing))
	}
	c.PassTTL("web-1")
	c.Do("GET", "/v1/health/service/web?passing", nil, &passing)
	if len(passing) != 1 {
		t.Fatalf("passing after PassTTL: got %d, want 1", len(passing))
	}
	before, _ := strconv.Atoi(c.Index("web"))
	c.Restart()
	c.Do("GET", "/v1/health/service/web", nil, &passing)
	after, _ := strconv.Atoi(c.Index("web"))
	if len(passing) != 0 || after >= before {
		t.Fatalf("after a restart: got %d instances at index %d, want none and an index below %d", len(passing), after, before)
	}
}
