package redisproxy

// kind is how attache serves a command.
type kind int

const (
	unsupported kind = iota
	local            // answered by attache
	single           // one key at args[1]
	sameShard        // several keys that must live on one shard
	fanout           // keys split per shard, replies merged
	script           // EVAL/EVALSHA: keys after numkeys
)

// spec says where a command's keys are: args[first], then every step-th
// argument up to last (-1: the last argument).
type spec struct {
	kind              kind
	first, last, step int
	name              string // upper case
	// readOnly: Redis flags the command readonly, so sending it again
	// after a connection closed before its reply cannot change data.
	readOnly bool
}

// commands is the whitelist. Anything else gets an -ERR naming the command
// (twemproxy closes the connection instead; a demanding client wants an
// error it can act on).
var commands = func() map[string]spec {
	m := map[string]spec{}
	add := func(s spec, names ...string) {
		for _, n := range names {
			s.name = n
			m[n] = s
		}
	}
	add(spec{kind: local}, "PING", "ECHO", "QUIT", "AUTH", "HELLO", "SELECT")
	add(spec{kind: single, first: 1, last: 1, step: 1},
		// strings and keys
		"GET", "SET", "SETNX", "SETEX", "PSETEX", "GETSET", "GETDEL", "GETEX", "APPEND", "STRLEN",
		"INCR", "DECR", "INCRBY", "DECRBY", "INCRBYFLOAT", "GETRANGE", "SETRANGE", "SUBSTR",
		"GETBIT", "SETBIT", "BITCOUNT", "BITPOS", "BITFIELD", "BITFIELD_RO",
		"EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "EXPIRETIME", "PEXPIRETIME", "TTL", "PTTL",
		"PERSIST", "TYPE", "DUMP", "RESTORE", "SORT", "SORT_RO",
		// hashes
		"HSET", "HSETNX", "HGET", "HMSET", "HMGET", "HDEL", "HEXISTS", "HGETALL", "HKEYS", "HVALS",
		"HLEN", "HINCRBY", "HINCRBYFLOAT", "HSTRLEN", "HSCAN", "HRANDFIELD",
		// lists
		"LPUSH", "RPUSH", "LPUSHX", "RPUSHX", "LPOP", "RPOP", "LLEN", "LRANGE", "LINDEX", "LSET",
		"LREM", "LTRIM", "LINSERT", "LPOS",
		// sets
		"SADD", "SREM", "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD", "SPOP", "SRANDMEMBER", "SSCAN",
		// sorted sets
		"ZADD", "ZREM", "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX",
		"ZREVRANGEBYLEX", "ZCARD", "ZCOUNT", "ZLEXCOUNT", "ZSCORE", "ZMSCORE", "ZINCRBY", "ZRANK",
		"ZREVRANK", "ZREMRANGEBYRANK", "ZREMRANGEBYSCORE", "ZREMRANGEBYLEX", "ZPOPMIN", "ZPOPMAX",
		"ZSCAN", "ZRANDMEMBER",
		// hyperloglog, geo, streams
		"PFADD", "GEOADD", "GEODIST", "GEOHASH", "GEOPOS", "GEOSEARCH", "GEORADIUS_RO", "GEORADIUSBYMEMBER_RO",
		"XADD", "XLEN", "XRANGE", "XREVRANGE", "XDEL", "XTRIM", "XACK", "XPENDING", "XCLAIM", "XAUTOCLAIM")
	add(spec{kind: sameShard, first: 1, last: -1, step: 1},
		"SINTER", "SUNION", "SDIFF", "SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE", "PFCOUNT", "PFMERGE")
	add(spec{kind: sameShard, first: 1, last: 2, step: 1}, "RENAME", "RENAMENX", "RPOPLPUSH", "LMOVE", "SMOVE", "COPY")
	add(spec{kind: fanout, first: 1, last: -1, step: 1}, "MGET", "DEL", "UNLINK", "EXISTS", "TOUCH")
	add(spec{kind: fanout, first: 1, last: -1, step: 2}, "MSET")
	add(spec{kind: script}, "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO")
	for _, n := range readOnly {
		s, ok := m[n]
		if !ok {
			panic("redisproxy: readOnly lists " + n + ", which is not proxied")
		}
		s.readOnly = true
		m[n] = s
	}
	return m
}()

// readOnly lists the proxied commands Redis flags readonly (COMMAND INFO):
// the ones a lost connection may resend.
var readOnly = []string{
	"GET", "STRLEN", "GETRANGE", "SUBSTR", "GETBIT", "BITCOUNT", "BITPOS", "BITFIELD_RO",
	"EXPIRETIME", "PEXPIRETIME", "TTL", "PTTL", "TYPE", "DUMP", "SORT_RO",
	"HGET", "HMGET", "HEXISTS", "HGETALL", "HKEYS", "HVALS", "HLEN", "HSTRLEN", "HSCAN", "HRANDFIELD",
	"LLEN", "LRANGE", "LINDEX", "LPOS",
	"SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD", "SRANDMEMBER", "SSCAN", "SINTER", "SUNION", "SDIFF",
	"ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX", "ZREVRANGEBYLEX",
	"ZCARD", "ZCOUNT", "ZLEXCOUNT", "ZSCORE", "ZMSCORE", "ZRANK", "ZREVRANK", "ZSCAN", "ZRANDMEMBER",
	"GEODIST", "GEOHASH", "GEOPOS", "GEOSEARCH", "GEORADIUS_RO", "GEORADIUSBYMEMBER_RO",
	"XLEN", "XRANGE", "XREVRANGE", "XPENDING", "PFCOUNT",
	"MGET", "EXISTS", "EVAL_RO", "EVALSHA_RO",
}

// why explains, in the -ERR reply, why a command cannot be proxied.
var why = map[string]string{
	"MULTI": "transactions cannot span shards", "EXEC": "transactions cannot span shards",
	"DISCARD": "transactions cannot span shards", "WATCH": "transactions cannot span shards",
	"UNWATCH":   "transactions cannot span shards",
	"SUBSCRIBE": "pub/sub is not sharded", "PSUBSCRIBE": "pub/sub is not sharded",
	"SSUBSCRIBE": "pub/sub is not sharded", "UNSUBSCRIBE": "pub/sub is not sharded",
	"PUNSUBSCRIBE": "pub/sub is not sharded", "PUBLISH": "pub/sub is not sharded",
	"BLPOP": "blocking commands would stall a shared server connection", "BRPOP": "blocking commands would stall a shared server connection",
	"BRPOPLPUSH": "blocking commands would stall a shared server connection", "BLMOVE": "blocking commands would stall a shared server connection",
	"BZPOPMIN": "blocking commands would stall a shared server connection", "BZPOPMAX": "blocking commands would stall a shared server connection",
	"BLMPOP": "blocking commands would stall a shared server connection", "BZMPOP": "blocking commands would stall a shared server connection",
	"KEYS": "it would have to scan every shard", "SCAN": "it would have to scan every shard",
	"RANDOMKEY": "it would have to scan every shard", "DBSIZE": "it would have to scan every shard",
	"FLUSHALL": "it would act on every shard", "FLUSHDB": "it would act on every shard",
	"CLUSTER": "attache is not a Redis Cluster node", "SCRIPT": "scripts are loaded per shard",
	"WAIT": "replication waits are per shard", "MONITOR": "it is per server", "CLIENT": "client state is per server connection",
}
