package hashkit

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Server is one configured shard as twemproxy sees it.
type Server struct {
	Name   string // the string hashed onto the ring; see KetamaName
	Weight int
	Live   bool // false while ejected
}

// KetamaName is the ring string of a server written as hostport with an
// optional name: the name if given, else host:port exactly as written (not
// resolved), else the host alone for port 11211 (libmemcached's default).
func KetamaName(hostport, name string) string {
	if name != "" {
		return name
	}
	if host, port, err := net.SplitHostPort(hostport); err == nil && port == "11211" {
		return host
	}
	return hostport
}

// Distributions lists the distribution names twemproxy accepts.
var Distributions = []string{"ketama", "modula", "random"}

// Ring maps key hashes to server indexes (positions in the configured
// list, dead servers included). Build a new Ring when liveness changes; a
// Ring is immutable and safe for concurrent use.
type Ring struct {
	dist   string
	total  int // configured servers
	points []point
	modula []int
	live   []int
}

type point struct {
	value uint32
	index int
}

// pointsPerServer is KETAMA_POINTS_PER_SERVER: 40 MD5 digests of 4 points.
const pointsPerServer = 160

// Build makes the ring for a distribution over servers, using the live
// ones only. Servers are taken in twemproxy's order, not the configured
// one: nutcracker sorts its servers by name when it loads its
// configuration (see NameOrder), and modula indexes that sorted list. The
// Ring still answers with configured positions.
func Build(dist string, servers []Server) (*Ring, error) {
	r := &Ring{dist: dist, total: len(servers)}
	totalWeight := 0
	for _, i := range NameOrder(servers) {
		if s := servers[i]; s.Live {
			r.live = append(r.live, i)
			totalWeight += s.Weight
		}
	}
	switch dist {
	case "ketama":
		nlive := len(r.live)
		for _, i := range r.live {
			s := servers[i]
			// Every step in float32, as nutcracker computes it: with 25
			// equal servers this gives 39 digests (156 points), not 40.
			pct := float32(s.Weight) / float32(totalWeight)
			x := float32(pct * pointsPerServer)
			x = float32(x / 4)
			x = float32(x * float32(nlive))
			x = float32(float64(x) + 0.0000000001)
			digests := int(math.Floor(float64(x)))
			for d := 0; d < digests; d++ {
				sum := md5.Sum([]byte(s.Name + "-" + strconv.Itoa(d)))
				for q := 0; q < 4; q++ {
					r.points = append(r.points, point{binary.LittleEndian.Uint32(sum[4*q:]), i})
				}
			}
		}
		slices.SortStableFunc(r.points, func(a, b point) int {
			switch {
			case a.value < b.value:
				return -1
			case a.value > b.value:
				return 1
			}
			return 0
		})
	case "modula":
		for _, i := range r.live {
			for w := 0; w < servers[i].Weight; w++ {
				r.modula = append(r.modula, i)
			}
		}
	case "random":
	default:
		return nil, fmt.Errorf("unknown distribution %q (want ketama, modula or random)", dist)
	}
	return r, nil
}

// NameOrder returns the positions of servers in the order nutcracker
// keeps them (conf_validate_server sorts with string_compare): shorter
// names first, then bytewise. Configured order breaks ties, which
// nutcracker refuses (servers with the same name).
func NameOrder(servers []Server) []int {
	order := make([]int, len(servers))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		x, y := servers[a].Name, servers[b].Name
		if len(x) != len(y) {
			return len(x) - len(y)
		}
		return strings.Compare(x, y)
	})
	return order
}

// Points returns the number of ketama points (for tests and status).
func (r *Ring) Points() int { return len(r.points) }

// Index returns the server for a hash, or -1 when no server is live.
func (r *Ring) Index(hash uint32) int {
	switch r.dist {
	case "ketama":
		if len(r.points) == 0 {
			return -1
		}
		i, _ := slices.BinarySearchFunc(r.points, hash, func(p point, h uint32) int {
			switch {
			case p.value < h:
				return -1
			case p.value > h:
				return 1
			}
			return 0
		})
		if i == len(r.points) {
			i = 0
		}
		return r.points[i].index
	case "modula":
		if len(r.modula) == 0 {
			return -1
		}
		return r.modula[hash%uint32(len(r.modula))]
	default:
		if len(r.live) == 0 {
			return -1
		}
		return r.live[rand.IntN(len(r.live))]
	}
}

// Pick returns the server index for a key: a pool of one configured server
// takes every key unhashed; otherwise the hash tag is applied, an empty key
// hashes to 0, and the ring decides.
func (r *Ring) Pick(key []byte, hash Func, tag string) int {
	if r.total == 1 {
		return 0
	}
	k := TagKey(key, tag)
	var h uint32
	if len(k) > 0 {
		h = hash(k)
	}
	return r.Index(h)
}

// TagKey returns the part of key that is hashed: with a two-character tag
// such as "{}", the bytes between the first tag[0] and the next tag[1] when
// that is non-empty; otherwise the whole key.
func TagKey(key []byte, tag string) []byte {
	if len(tag) != 2 {
		return key
	}
	start := slices.Index(key, tag[0])
	if start < 0 {
		return key
	}
	end := slices.Index(key[start+1:], tag[1])
	if end <= 0 { // not found, or empty
		return key
	}
	return key[start+1 : start+1+end]
}
