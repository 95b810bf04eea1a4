package app

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/attache-proxy/attache/internal/testenv"
)

// TestHTTPStickyEndUser: a sticky 90/10 split by client_ip, behind the
// application, keys on the end user its proxies name in X-Forwarded-For
// or Forwarded, not on the application's loopback address: end users
// spread about 90/10 and each stays on its side; only trusted hops are
// believed; a request without an end user takes the pod's side, and pods
// with different keys spread over both.
func TestHTTPStickyEndUser(t *testing.T) {
	t.Parallel()
	paths := []string{"engine", "goroutine"}
	if strings.HasPrefix(t.Name(), "TestHTTPOnNetHTTP/") {
		paths = []string{"net/http"} // start sets ATTACHE_HTTP_FAST_PATH=off
	}
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			env := map[string]string{"POD_NAME": "orders-7d9f-abcde"}
			if path == "goroutine" {
				env["ATTACHE_EVENT_LOOPS"] = "off" // the portable path
			}
			testStickyEndUser(t, env)
		})
	}
}

func testStickyEndUser(t *testing.T, env map[string]string) {
	prod, exp := newBackend(t, "prod", false), newBackend(t, "exp", false)
	var pods strings.Builder
	const npods = 40
	for i := range npods {
		fmt.Fprintf(&pods, "      - {match: {prefix: /pod-%d/}, to: [{cluster: prod, weight: 90}, {cluster: exp, weight: 10}], sticky: {by: client_ip, pod_key: pod-%d}}\n", i, i)
	}
	h := start(t, yamlf(`
listeners:
  - name: xff
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: prod, weight: 90}, {cluster: exp, weight: 10}], sticky: {by: client_ip}}]
  - name: fwd
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: prod, weight: 90}, {cluster: exp, weight: 10}], sticky: {by: client_ip, forwarded_header: forwarded}}]
  - name: untrusted
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: prod, weight: 90}, {cluster: exp, weight: 10}], sticky: {by: client_ip, trusted_proxies: [192.0.2.0/24]}}]
  - name: ingress
    address: "%s"
    protocol: http
    routes: [{match: {prefix: /}, to: [{cluster: prod, weight: 90}, {cluster: exp, weight: 10}], sticky: {by: header, name: x-user-id, trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]}}]
  - name: pods
    address: "%s"
    protocol: http
    routes:
%sclusters:
  - {name: prod, endpoints: ["%s"]}
  - {name: exp, endpoints: ["%s"]}
`, testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), pods.String(), prod.addr, exp.addr), env)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	t.Cleanup(client.CloseIdleConnections)
	side := func(listener, path string, hdr map[string]string) string {
		t.Helper()
		resp, _ := httpGet(t, client, "http://"+h.addr(listener)+path, hdr)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s %v: status %d", listener, path, hdr, resp.StatusCode)
		}
		return resp.Header.Get("X-Backend")
	}
	xff := func(v string) map[string]string { return map[string]string{"X-Forwarded-For": v} }
	fwd := func(v string) map[string]string { return map[string]string{"Forwarded": v} }

	const users = 200
	user := func(i int) string {
		if i%4 == 3 {
			return fmt.Sprintf("2001:db8:%x::%x", i/256, i%256+1)
		}
		return fmt.Sprintf("198.51.%d.%d", i/200, i%200+1)
	}
	sides := make([]string, users)
	count := map[string]int{}
	for i := range users {
		sides[i] = side("xff", "/", xff(user(i)))
		count[sides[i]]++
	}
	// 200 users at 10%: 20 expected; 8-40 holds the binomial's every
	// plausible draw (p < 1e-3 outside) and fails when all land on one side.
	if count["exp"] < 8 || count["exp"] > 40 || count["prod"]+count["exp"] != users {
		t.Errorf("%d end users split %v, want about 90/10", users, count)
	}
	if got := prod.last.Load().(http.Header).Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("upstream X-Forwarded-For %q, want the application's address (the header is read, then replaced)", got)
	}

	st, err := json.Marshal(h.app.Status())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"sticky":[{"route":"xff/0","by":"client_ip","forwarded_header":"x-forwarded-for","trusted_proxies":["127.0.0.0/8","::1/128"],"pod_key":"orders-7d9f-abcde"}]`,
		`"sticky":[{"route":"untrusted/0","by":"client_ip","forwarded_header":"x-forwarded-for","trusted_proxies":["192.0.2.0/24"],"pod_key":"orders-7d9f-abcde"}]`,
		`{"route":"pods/3","by":"client_ip","forwarded_header":"x-forwarded-for","trusted_proxies":["127.0.0.0/8","::1/128"],"pod_key":"pod-3"}`,
	} {
		if !strings.Contains(string(st), want) {
			t.Errorf("/status has no %s:\n%s", want, st)
		}
	}

	t.Run("same user same side", func(t *testing.T) {
		for i := range users {
			if got := side("xff", "/", xff(user(i))); got != sides[i] {
				t.Fatalf("user %s moved from %s to %s", user(i), sides[i], got)
			}
		}
	})
	t.Run("right to left through trusted hops", func(t *testing.T) {
		for i := range 50 {
			// A spoofed entry to the left of the end user is not read; a
			// loopback hop to the right of it is skipped.
			hdr := xff(fmt.Sprintf("203.0.113.%d, %s, 127.0.0.9", 100+i, user(i)))
			if got := side("xff", "/", hdr); got != sides[i] {
				t.Fatalf("%v: got %s, want %s as for %s alone", hdr, got, sides[i], user(i))
			}
			// Split over two header lines, with a port.
			req, _ := http.NewRequest("GET", "http://"+h.addr("xff")+"/", nil)
			req.Header.Add("X-Forwarded-For", "203.0.113.1")
			req.Header.Add("X-Forwarded-For", "["+strings.Trim(user(i), "[]")+"]:4711")
			if i%4 != 3 {
				req.Header["X-Forwarded-For"][1] = user(i) + ":4711"
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Backend"); got != sides[i] {
				t.Fatalf("%v: got %s, want %s", req.Header["X-Forwarded-For"], got, sides[i])
			}
		}
	})

	pod := side("xff", "/", nil)
	t.Run("no end user takes the pod's side", func(t *testing.T) {
		for _, v := range []string{"", "127.0.0.1", "not an address", "198.51.100.1;", "unknown", "::1, 127.0.0.2"} {
			for range 3 {
				var hdr map[string]string
				if v != "" {
					hdr = xff(v)
				}
				if got := side("xff", "/", hdr); got != pod {
					t.Fatalf("X-Forwarded-For %q: got %s, want the pod's side %s", v, got, pod)
				}
			}
		}
	})
	t.Run("untrusted peer: forwarded header not honoured", func(t *testing.T) {
		var first string
		for i := range users {
			got := side("untrusted", "/", xff(user(i)))
			if first == "" {
				first = got
			}
			if got != first {
				t.Fatalf("X-Forwarded-For %s from an untrusted peer moved the request to %s (others: %s)", user(i), got, first)
			}
		}
		if first != pod {
			t.Errorf("untrusted listener sent its requests to %s, want the pod's side %s", first, pod)
		}
		for key, want := range map[string]string{"pod": fmt.Sprint(users), "client_ip": "0", "header": "0"} {
			m := fmt.Sprintf(`attache_http_sticky_requests_total{key=%q,listener="untrusted",route="untrusted/0"}`, key)
			if got := h.metric(m); got != want {
				t.Errorf("%s = %q, want %s", m, got, want)
			}
		}
		if got := h.metric(`attache_http_sticky_requests_total{key="client_ip",listener="xff",route="xff/0"}`); got == "" || got == "0" {
			t.Errorf("xff listener: %q requests keyed on client_ip, want some", got)
		}
	})
	t.Run("forwarded", func(t *testing.T) {
		for i := range users {
			u := user(i)
			node := u
			if strings.Contains(u, ":") {
				node = `"[` + u + `]:4711"`
			} else if i%2 == 0 {
				node = `"` + u + `:80"`
			}
			v := fmt.Sprintf(`for=203.0.113.7;proto=https, For=%s;by="[2001:db8::1]", for=127.0.0.1;host="a,b"`, node)
			if got := side("fwd", "/", fwd(v)); got != sides[i] {
				t.Fatalf("Forwarded %s: got %s, want %s as for X-Forwarded-For %s", v, got, sides[i], u)
			}
		}
		for _, v := range []string{`for=_hidden`, `for=unknown`, `for="198.51.100.1`, `for=198.51.100.1;for=198.51.100.2`, `for=_x, for=127.0.0.1`} {
			if got := side("fwd", "/", fwd(v)); got != pod {
				t.Errorf("Forwarded %s: got %s, want the pod's side %s", v, got, pod)
			}
		}
	})
	t.Run("header first, end user without it", func(t *testing.T) {
		for i := range users {
			// 10.0.0.0/8 is trusted here: the ingress hop is skipped.
			if got := side("ingress", "/", xff(user(i)+", 10.1.2.3")); got != sides[i] {
				t.Fatalf("no x-user-id, X-Forwarded-For %s: got %s, want %s", user(i), got, sides[i])
			}
		}
		want := side("ingress", "/", map[string]string{"X-User-Id": "u1"})
		for i := range 20 {
			if got := side("ingress", "/", map[string]string{"X-User-Id": "u1", "X-Forwarded-For": user(i)}); got != want {
				t.Fatalf("x-user-id u1 with X-Forwarded-For %s: got %s, want %s", user(i), got, want)
			}
		}
	})
	t.Run("pods spread by their keys", func(t *testing.T) {
		count := map[string]int{}
		for i := range npods {
			first := side("pods", fmt.Sprintf("/pod-%d/", i), nil)
			if again := side("pods", fmt.Sprintf("/pod-%d/x", i), nil); again != first {
				t.Fatalf("pod-%d: %s, then %s", i, first, again)
			}
			count[first]++
		}
		// Deterministic for these keys; the share itself is
		// TestStickyPodShare's.
		if count["exp"] == 0 || count["prod"] == 0 {
			t.Errorf("%d pods split %v, want some on each side", npods, count)
		}
	})
}
