package pgproxy

import "testing"

func TestParamsKey(t *testing.T) {
	a := paramsKey(map[string]string{"application_name": "app", "TimeZone": "UTC"})
	b := paramsKey(map[string]string{"TimeZone": "UTC", "application_name": "app"})
	if a != b {
		t.Fatalf("same parameters, two keys: %q, %q", a, b)
	}
	for _, other := range []map[string]string{
		{"application_name": "app"},
		{"application_name": "app", "TimeZone": "UTC", "DateStyle": "ISO"},
		{"application_name": "app", "TimeZone": "Asia/Tokyo"},
		{"application_name": "appTimeZone=UTC"},
	} {
		if paramsKey(other) == a {
			t.Errorf("%v has the key of other parameters: %q", other, a)
		}
	}
	if paramsKey(nil) != "" {
		t.Errorf("no parameters: key %q, want empty (a fresh server's)", paramsKey(nil))
	}
}

// A client whose parameters the server connection already has from its
// login (as JDBC's client_encoding=UTF8) costs no SET, and the connection
// records them: the engine hands it to the next such client at once
// instead of going through a goroutine to compare them again.
func TestApplyParamsRecordsLoginValues(t *testing.T) {
	s := &server{init: map[string]string{"client_encoding": "UTF8"}, applied: map[string]string{}}
	params := map[string]string{"client_encoding": "UTF8"}
	c := &client{params: params, pkey: paramsKey(params)}
	if c.pkey == s.akey {
		t.Fatal("a fresh server connection already matches")
	}
	if err := c.applyParams(s); err != nil { // s has no connection: a SET would fail
		t.Fatal(err)
	}
	if s.akey != c.pkey || s.applied["client_encoding"] != "UTF8" {
		t.Errorf("after applyParams: akey %q applied %v, want %q", s.akey, s.applied, c.pkey)
	}
	s.clearApplied()
	if s.akey != "" || len(s.applied) != 0 {
		t.Errorf("after clearApplied: akey %q applied %v", s.akey, s.applied)
	}
}
