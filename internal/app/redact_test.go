package app

import (
	"strings"
	"testing"
)

// TestConfigEndpointRedacts: /config and /status show no route header
// value, no argument of the failover command and no user, path or query
// of the failover webhook.
func TestConfigEndpointRedacts(t *testing.T) {
	t.Parallel()
	h := start(t, `
listeners:
  - name: web
    address: "127.0.0.1:0"
    protocol: http
    routes:
      - match: {prefix: /, headers: {X-Tenant-Key: match-s3cret}}
        to: [{cluster: api}]
        headers: {add: {Authorization: "Bearer add-s3cret"}}
clusters:
  - {name: api, endpoints: ["127.0.0.1:1"]}
  - name: pg
    endpoints: ["127.0.0.1:2"]
    health_check: {type: postgres, user: u, interval: 1h, timeout: 1s}
    on_failover:
      command: [/bin/true, --token, cmd-s3cret]
      webhook: "https://user:pw-s3cret@hooks.example.com/services/path-s3cret?token=query-s3cret"
`, nil)
	_, cfg := h.admin("GET", "/config")
	_, status := h.admin("GET", "/status")
	for where, text := range map[string]string{"/config": cfg, "/status": status, "logs": h.logs.String()} {
		for _, secret := range []string{"match-s3cret", "add-s3cret", "cmd-s3cret", "pw-s3cret", "path-s3cret", "query-s3cret"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows %q", where, secret)
			}
		}
	}
	for _, want := range []string{"X-Tenant-Key: <redacted>", "Authorization: <redacted>", "- /bin/true", "webhook: https://hooks.example.com/<redacted>"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("/config: got no %q:\n%s", want, cfg)
		}
	}
}
