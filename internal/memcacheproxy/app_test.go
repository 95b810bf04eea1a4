package memcacheproxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/attache-proxy/attache/internal/app"
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/protocols"
	"github.com/attache-proxy/attache/internal/testenv"
)

// TestAttacheRun runs attache as `attache run` does, from a configuration
// file with a memcached listener: the application's client stores and
// reads through it, /status shows the ring and /metrics the commands.
func TestAttacheRun(t *testing.T) {
	a, _ := testenv.Memcached(t)
	b, _ := testenv.Memcached(t)
	file := filepath.Join(t.TempDir(), "attache.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf(`admin: {address: "127.0.0.1:0"}
listeners:
  - {name: cache, address: "127.0.0.1:0", protocol: memcached, cluster: mc}
clusters:
  - name: mc
    endpoints: ["%s:1 mc0", "%s:1 mc1"]
    health_check: {type: memcached, interval: 1s}
    memcached: {hash: md5, auto_eject_hosts: true}
`, a, b)), 0o644)
	ap, err := app.New(app.Options{ConfigPath: file, LogOutput: io.Discard, LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ap.Run(ctx, ctx); close(done) }()
	defer func() { cancel(); <-done }()

	mc := memcache.New(ap.ListenerAddr("cache"))
	mc.Timeout = 5 * time.Second
	var keys []string
	for i := range 20 {
		keys = append(keys, fmt.Sprintf("k%d", i))
		var err error
		for try := 0; try < 50; try++ { // the first health check round
			if err = mc.Set(&memcache.Item{Key: keys[i], Value: []byte("v")}); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, err := mc.GetMulti(keys); err != nil || len(got) != len(keys) {
		t.Fatalf("GetMulti: %d of %d, %v", len(got), len(keys), err)
	}
	get := func(path string) string {
		resp, err := http.Get("http://" + ap.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if s := strings.Join(strings.Fields(get("/status")), ""); !strings.Contains(s, `"memcached_shards":[{"address":"`+a+`","on_ring":true}`) {
		t.Errorf("/status: %s", s)
	}
	if m := get("/metrics"); !strings.Contains(m, `attache_memcached_requests_total{cluster="mc",result="ok",shard="`) {
		t.Errorf("/metrics has no memcached commands")
	}
}

// TestConfig: the options are decoded, defaulted and checked by the
// protocol's own types, with the field's path and line in each error.
func TestConfig(t *testing.T) {
	parse := func(text string) (*config.Config, error) {
		return config.Parse([]byte(text), func(string) (string, bool) { return "", false }, protocols.Schemas())
	}
	c, err := parse(`listeners:
  - {name: cache, address: "127.0.0.1:11211", protocol: memcached, cluster: mc}
clusters:
  - {name: mc, endpoints: ["127.0.0.1:11311", "127.0.0.1:11312"], memcached: {auto_eject_hosts: true}}
`)
	if err != nil {
		t.Fatal(err)
	}
	o := c.Clusters[0].Options["memcached"]
	if got := fmt.Sprintf("%+v", o); got != "&{Hash:fnv1a_64 Distribution:ketama HashTag: AutoEjectHosts:true ServerFailureLimit:2 ServerRetryTimeout:30000000000 ServerConnections:2 Timeout:2000000000}" {
		t.Errorf("cluster options: %s", got)
	}
	if got := fmt.Sprintf("%+v", c.Listeners[0].Options["memcached"]); got != "&{MaxValueBytes:1048576}" {
		t.Errorf("listener options: %s", got)
	}

	_, err = parse(`listeners:
  - {name: cache, address: "127.0.0.1:11211", protocol: memcached, cluster: mc, memcached: {max_value_bytes: -1}}
clusters:
  - name: mc
    endpoints: ["127.0.0.1:11311"]
    memcached:
      hash: fnv2
      distribution: ring
      hash_tag: "{"
      server_connections: -1
      server_retry_timeout: 1s
      retry: 3
    outlier_detection: {consecutive_failures: 3}
`)
	want := []string{
		`clusters[0].memcached.retry: unknown field (line 12)`,
		`clusters[0].memcached.hash: unknown hash "fnv2" (line 7)`,
		`clusters[0].memcached.distribution: unknown distribution "ring" (line 8)`,
		`clusters[0].memcached.hash_tag: want two characters, such as "{}" (line 9)`,
		`clusters[0].memcached.server_connections: must be 1 to 1024 (line 10)`,
		`listeners[0].memcached.max_value_bytes: must be 1 to 1073741824 (line 2)`,
		`clusters[0].outlier_detection: not used by memcached listeners (a memcached cluster ejects endpoints with memcached.auto_eject_hosts) (line 13)`,
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error()+"\n", w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}
