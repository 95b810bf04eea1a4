package config

import (
	"fmt"

	"github.com/attache-proxy/attache/internal/hashkit"
)

// redisCluster refuses two shards of a cluster that a redis listener
// shards with one ring name (their name, or host:port), as nutcracker
// does: both would take the same ketama points, and their modula order
// would be undefined. (Fields such a cluster does not use, balance and
// outlier_detection, are refused with every other unused field: usage.go.)
func (v *validator) redisCluster(p string, cl *Cluster) {
	seen := map[string]int{}
	for j, e := range cl.Endpoints {
		name := hashkit.KetamaName(e.Address, e.Name)
		if i, dup := seen[name]; dup {
			v.errorf(fmt.Sprintf("%s.endpoints[%d]", p, j), "shard name %q is also endpoints[%d]'s (nutcracker refuses it: both would take the same ring points)", name, i)
			continue
		}
		seen[name] = j
	}
}
