package httpproxy

import (
	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/pgproxy"
	"github.com/attache-proxy/attache/internal/redisproxy"
	"github.com/attache-proxy/attache/internal/tcpproxy"
)

// listenerOf is an http listener with routes, as config.Parse leaves it.
func listenerOf(name string, routes ...Route) config.Listener {
	return config.Listener{Name: name, Protocol: "http", Options: map[string]any{"http": &ListenerOptions{Routes: routes}}}
}

func noEnv(string) (string, bool) { return "", false }

// parse is config.Parse with the protocols of these tests: tcp, http,
// and redis and postgres, whose listeners refuse http's options.
func parse(data []byte, env func(string) (string, bool)) (*config.Config, error) {
	return config.Parse(data, env, []config.Schema{&tcpproxy.Protocol{}, &Protocol{}, &redisproxy.Protocol{}, &pgproxy.Protocol{}})
}
