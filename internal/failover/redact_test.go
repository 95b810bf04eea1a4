package failover

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestWebhookErrorRedacted: a failed webhook's error (logged, counted)
// names the host, never the user, path or query that may hold a token.
func TestWebhookErrorRedacted(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }))
	defer srv.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct{ name, url, want string }{
		{"refused", "http://user:pw-s3cret@" + refused + "/hooks/path-s3cret?token=query-s3cret", "webhook http://" + refused + "/<redacted>: "},
		{"status", srv.URL + "/hooks/path-s3cret?token=query-s3cret", "status 500"},
	} {
		h := &Hook{Webhook: tc.url, Timeout: 5 * time.Second}
		_, err := h.Run(context.Background(), Event{Cluster: "c", NewPrimary: "b:1", Time: time.Now()})
		if err == nil {
			t.Fatalf("%s: got no error", tc.name)
		}
		for _, secret := range []string{"pw-s3cret", "path-s3cret", "query-s3cret"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: got %q, want %s redacted", tc.name, err, secret)
			}
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %q, want it to contain %q", tc.name, err, tc.want)
		}
	}
}
