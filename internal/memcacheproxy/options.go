package memcacheproxy

import (
	"time"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/hashkit"
)

// ListenerOptions are listeners[].memcached: what the listener accepts
// from its clients.
type ListenerOptions struct {
	// MaxValueBytes bounds a stored value (memcached's -I,
	// item_size_max); a larger one is refused as memcached refuses it.
	MaxValueBytes int `yaml:"max_value_bytes"`
}

// ClusterOptions are clusters[].memcached: how the cluster's endpoints
// are sharded, with twemproxy's names and defaults.
type ClusterOptions struct {
	Hash         string `yaml:"hash"`         // a twemproxy hash name
	Distribution string `yaml:"distribution"` // ketama | modula | random
	HashTag      string `yaml:"hash_tag"`     // "" or two characters, e.g. "{}"
	// AutoEjectHosts takes a failing endpoint off the ring: its keys go to
	// the others until it is back. Without it, its keys get SERVER_ERROR.
	AutoEjectHosts bool `yaml:"auto_eject_hosts"`
	// ServerFailureLimit and ServerRetryTimeout are twemproxy's: with
	// auto_eject_hosts, that many consecutive failures of an endpoint
	// take it off the ring for that long.
	ServerFailureLimit int             `yaml:"server_failure_limit"`
	ServerRetryTimeout config.Duration `yaml:"server_retry_timeout"`
	// ServerConnections are the idle connections kept per endpoint.
	ServerConnections int             `yaml:"server_connections"`
	Timeout           config.Duration `yaml:"timeout"` // per reply; 0: none
}

// Defaults, twemproxy's where it has the setting.
const (
	DefaultMaxValueBytes      = 1 << 20 // memcached's item_size_max
	DefaultHash               = "fnv1a_64"
	DefaultDistribution       = "ketama"
	DefaultServerFailureLimit = 2
	DefaultServerRetryTimeout = 30 * time.Second
	DefaultServerConnections  = 2
	DefaultTimeout            = 2 * time.Second
)

// Default fills in the defaults.
func (o *ListenerOptions) Default(*config.Check) {
	if o.MaxValueBytes == 0 {
		o.MaxValueBytes = DefaultMaxValueBytes
	}
}

// Validate checks the value limit.
func (o *ListenerOptions) Validate(c *config.Check) {
	if o.MaxValueBytes < 1 || o.MaxValueBytes > 1<<30 {
		c.Errorf(c.Path+".max_value_bytes", "must be 1 to 1073741824")
	}
}

// Default fills in twemproxy's defaults.
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

// Validate checks the names against hashkit's and the limits.
func (o *ClusterOptions) Validate(c *config.Check) {
	c.OneOf(c.Path+".hash", "hash", o.Hash, hashkit.Names)
	c.OneOf(c.Path+".distribution", "distribution", o.Distribution, hashkit.Distributions)
	if o.HashTag != "" && len(o.HashTag) != 2 {
		c.Errorf(c.Path+".hash_tag", "want two characters, such as \"{}\"")
	}
	if o.ServerFailureLimit < 1 {
		c.Errorf(c.Path+".server_failure_limit", "must be at least 1")
	}
	if o.ServerRetryTimeout <= 0 {
		c.Errorf(c.Path+".server_retry_timeout", "must be positive")
	}
	if o.ServerConnections < 1 || o.ServerConnections > 1024 {
		c.Errorf(c.Path+".server_connections", "must be 1 to 1024")
	}
	if o.Timeout < 0 {
		c.Errorf(c.Path+".timeout", "must not be negative")
	}
}
