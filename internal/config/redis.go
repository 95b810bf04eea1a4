package config

import (
	"fmt"

	"github.com/attache-proxy/attache/internal/hashkit"
)

// redisCluster reports what a cluster that redis listener l shards sets
// and its pool does not use: keys pick the shard (not balance), and
// redis.auto_eject_hosts ejects shards (not outlier_detection). It also
// refuses two shards with one ring name (their name, or host:port), as
// nutcracker does: both would take the same ketama points, and their
// modula order would be undefined.
func (v *validator) redisCluster(p string, cl *Cluster, l Listener) {
	for _, f := range []struct{ field, why string }{
		{"balance", "keys pick the shard"},
		{"outlier_detection", "use redis.auto_eject_hosts"},
	} {
		if v.c.has(p + "." + f.field) {
			v.errorf(p+"."+f.field, "not used by a Redis cluster (listener %q shards it: %s)", l.Name, f.why)
		}
	}
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
