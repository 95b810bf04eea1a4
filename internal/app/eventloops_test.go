package app

import "testing"

// TestEventLoopsEnv: ATTACHE_EVENT_LOOPS=off gives no loops (every
// protocol's portable path); unset or on, the process's loops; anything
// else is refused.
func TestEventLoopsEnv(t *testing.T) {
	for _, tc := range []struct {
		val   string
		set   bool
		loops bool
		err   string
	}{
		{"", false, true, ""},
		{"on", true, true, ""},
		{"off", true, false, ""},
		{"no", true, false, `ATTACHE_EVENT_LOOPS="no": want on or off`},
	} {
		g, err := eventLoops(func(k string) (string, bool) {
			if k == "ATTACHE_EVENT_LOOPS" && tc.set {
				return tc.val, true
			}
			return "", false
		})
		g.Close()
		if (g != nil) != tc.loops || (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
			t.Errorf("ATTACHE_EVENT_LOOPS=%q: got loops %v, error %v; want loops %v, error %q", tc.val, g != nil, err, tc.loops, tc.err)
		}
	}
}
