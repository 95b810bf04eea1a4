package config

import (
	"testing"
)

// aliased is echo whose greeting was once written on the listener itself.
type aliased struct{ echo }

func (aliased) Aliases() map[string]string {
	return map[string]string{"listeners[].greeting": "listeners[].echo.greeting", "listeners[].wait": "listeners[].echo.wait"}
}

// TestAliases: an old key is decoded at its new path, its problems
// reported at the path and line the file wrote; both forms are refused.
func TestAliases(t *testing.T) {
	t.Parallel()
	schemas := append([]Schema{aliased{}}, testSchemas...)
	const head = "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    protocol: echo\n    cluster: c\n"
	const clusters = "clusters:\n  - name: c\n    endpoints: [\"h:1\"]\n"
	c, err := Parse([]byte(head+"    greeting: hi\n    echo: {repeat: 2}\n"+clusters), nil, schemas)
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Listeners[0].Options["echo"].(*echoListener); o.Greeting != "hi" || o.Repeat != 2 {
		t.Errorf("old key with new block: got %+v", *o)
	}
	if got := c.Line("listeners[0].echo.greeting"); got != 6 {
		t.Errorf("line of the moved key: got %d, want 6", got)
	}
	c, err = Parse([]byte(head+"    greeting: hi\n    wait: 2s\n"+clusters), nil, schemas)
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Listeners[0].Options["echo"].(*echoListener); o.Greeting != "hi" || o.Wait.D().Seconds() != 2 {
		t.Errorf("old keys alone: got %+v", *o)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"both", head + "    greeting: hi\n    echo:\n      greeting: hello\n" + clusters,
			`listeners[0].greeting: given twice: also listeners[0].echo.greeting (line 6)`},
		{"bad value at old key", head + "    greeting: helo\n" + clusters,
			`listeners[0].greeting: unknown greeting "helo" (line 6); did you mean "hello"?`},
		{"decode error at old key", head + "    wait: soon\n" + clusters,
			`listeners[0].wait: invalid duration "soon" (want a number with a unit, like 5s or 250ms) (line 6)`},
		{"other protocol", "listeners:\n  - name: l\n    address: \"127.0.0.1:7000\"\n    cluster: c\n    greeting: hi\n" + clusters,
			`listeners[0].greeting: only for protocol echo (line 5)`},
		{"new form is checked as before", head + "    echo: {greeting: helo}\n" + clusters,
			`listeners[0].echo.greeting: unknown greeting "helo" (line 6); did you mean "hello"?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.yaml), nil, schemas)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v\nwant %s", err, tc.want)
			}
		})
	}
}
