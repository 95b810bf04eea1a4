package redisproxy

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/hashkit"
)

// ListenerOptions are listeners[].redis: what the listener's clients
// must do.
type ListenerOptions struct {
	// Password is what clients must AUTH with (requirepass); "": none.
	Password string `yaml:"password" secret:"true"`
}

// ClusterOptions are clusters[].redis: how the cluster is sharded and its
// shards reached, as twemproxy does. A redis health check AUTHs with
// Username and Password too.
type ClusterOptions struct {
	Hash               string          `yaml:"hash"`         // a twemproxy hash name (hashkit.Names)
	Distribution       string          `yaml:"distribution"` // hashkit.Distributions
	HashTag            string          `yaml:"hash_tag"`     // "" or two characters, e.g. "{}"
	AutoEjectHosts     bool            `yaml:"auto_eject_hosts"`
	ServerFailureLimit int             `yaml:"server_failure_limit"`
	ServerRetryTimeout config.Duration `yaml:"server_retry_timeout"`
	ServerConnections  int             `yaml:"server_connections"`
	Timeout            config.Duration `yaml:"timeout"` // per reply; 0 written: none
	Username           string          `yaml:"username"`
	Password           string          `yaml:"password" secret:"true"`
}

// Defaults of clusters[].redis: twemproxy's, but for Timeout (twemproxy
// waits forever).
const (
	DefaultHash               = "fnv1a_64"
	DefaultDistribution       = "ketama"
	DefaultServerFailureLimit = 2
	DefaultServerRetryTimeout = 30 * time.Second
	DefaultServerConnections  = 1
	DefaultTimeout            = 2 * time.Second
	MaxServerConnections      = 64
)

// ListenerOptions returns a new listeners[].redis.
func (*Protocol) ListenerOptions() any { return &ListenerOptions{} }

// ClusterOptions returns a new clusters[].redis.
func (*Protocol) ClusterOptions() any { return &ClusterOptions{} }

// Moved is the key that was the listener's before it was
// listeners[].redis's.
func (*Protocol) Moved() map[string]string {
	return map[string]string{"listeners[].password": "listeners[].redis.password"}
}

// IgnoredClusterFields are the cluster fields a redis listener does not
// read: keys choose the shard, auto_eject_hosts ejects.
func (*Protocol) IgnoredClusterFields() map[string]string {
	return map[string]string{
		"balance":           "a redis cluster picks shards by key hash (redis.distribution)",
		"outlier_detection": "a redis cluster ejects shards with redis.auto_eject_hosts",
		"zone_aware":        "each key has its shard, in whatever zone",
	}
}

// listenerOptions are the redis options of a listener of protocol redis
// (filled in by config.Parse).
func listenerOptions(l *config.Listener) *ListenerOptions {
	return l.Options["redis"].(*ListenerOptions)
}

// clusterOptions are the redis options of a cluster: nil when the file
// has none and no redis listener uses it.
func clusterOptions(cl *config.Cluster) *ClusterOptions {
	o, _ := cl.Options["redis"].(*ClusterOptions)
	return o
}

// Validate refuses what a redis listener does not read: idle_timeout (a
// Redis client's idle connection is its own business, as in twemproxy).
func (o *ListenerOptions) Validate(c *config.Check) {
	if c.Listener.IdleTimeout != config.Duration(config.DefaultIdleTimeout) {
		c.Errorf(c.Parent+".idle_timeout", "not used by redis listeners (only tcp and http listeners close idle clients)")
	}
}

// Default fills in the defaults; a timeout written as 0 stays 0 (none).
func (o *ClusterOptions) Default(c *config.Check) {
	if o.Hash == "" {
		o.Hash = DefaultHash
	}
	if o.Distribution == "" {
		o.Distribution = DefaultDistribution
	}
	if o.ServerFailureLimit == 0 {
		o.ServerFailureLimit = DefaultServerFailureLimit
	}
	if o.ServerRetryTimeout == 0 {
		o.ServerRetryTimeout = config.Duration(DefaultServerRetryTimeout)
	}
	if o.ServerConnections == 0 {
		o.ServerConnections = DefaultServerConnections
	}
	if o.Timeout == 0 && !c.Has(c.Path+".timeout") {
		o.Timeout = config.Duration(DefaultTimeout)
	}
}

// Validate checks the options of a cluster that redis listeners shard.
// On a cluster only other protocols' listeners use, a setting other than
// its default is refused (nothing shards there), but for the username
// and password a redis health check AUTHs with.
func (o *ClusterOptions) Validate(c *config.Check) {
	p := c.Path
	if len(c.UsedBy) > 0 && !c.UsedBy["redis"] {
		o.unused(c)
		return
	}
	c.OneOf(p+".hash", "hash", o.Hash, hashkit.Names)
	c.OneOf(p+".distribution", "distribution", o.Distribution, hashkit.Distributions)
	if o.HashTag != "" && len(o.HashTag) != 2 {
		c.Errorf(p+".hash_tag", "want two characters, like \"{}\"")
	}
	if o.ServerFailureLimit < 1 {
		c.Errorf(p+".server_failure_limit", "must be at least 1")
	}
	if o.ServerRetryTimeout <= 0 {
		c.Errorf(p+".server_retry_timeout", "must be positive")
	}
	if o.ServerConnections < 1 || o.ServerConnections > MaxServerConnections {
		c.Errorf(p+".server_connections", "must be 1-%d", MaxServerConnections)
	}
	if o.Timeout < 0 {
		c.Errorf(p+".timeout", "must not be negative")
	}
	if o.Username != "" && o.Password == "" {
		c.Errorf(p+".username", "needs password")
	}
	if c.UsedBy["redis"] {
		shardNames(c)
	}
}

// unused refuses the settings of a cluster no redis listener shards.
func (o *ClusterOptions) unused(c *config.Check) {
	redisCheck := c.Cluster.HealthCheck != nil && c.Cluster.HealthCheck.Type == "redis"
	def := &ClusterOptions{}
	def.Default(&config.Check{Config: &config.Config{}})
	got, want := reflect.ValueOf(*o), reflect.ValueOf(*def)
	for i := 0; i < got.NumField(); i++ {
		name, _, _ := strings.Cut(got.Type().Field(i).Tag.Get("yaml"), ",")
		if got.Field(i).Equal(want.Field(i)) || (name == "username" || name == "password") && redisCheck {
			continue
		}
		c.Errorf(c.Path+"."+name, "not used by %s listeners (only redis listeners shard; a redis health_check uses username and password)", config.ProtocolList(c.UsedBy))
	}
}

// shardNames refuses two shards with one ring name (their name, or
// host:port), as nutcracker does: both would take the same ketama points,
// and their modula order would be undefined.
func shardNames(c *config.Check) {
	seen := map[string]int{}
	for j, e := range c.Cluster.Endpoints {
		name := hashkit.KetamaName(e.Address, e.Name)
		if i, dup := seen[name]; dup {
			c.Errorf(fmt.Sprintf("%s.endpoints[%d]", c.ClusterPath, j), "shard name %q is also endpoints[%d]'s (nutcracker refuses it: both would take the same ring points)", name, i)
			continue
		}
		seen[name] = j
	}
}
