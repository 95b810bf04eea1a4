// Package hashkit reproduces twemproxy's (nutcracker's) key distribution
// exactly: its twelve hash functions with their quirks, the ketama
// continuum computed in float32, modula, and hash tags, so that attache
// finds every key on the shard where twemproxy put it.
//
// Quirks kept on purpose (each is what nutcracker does on x86-64): keys are
// C `char`, so bytes >= 0x80 are sign-extended in the FNV, one-at-a-time
// and hsieh (3-byte tail) hashes; fnv1a_64 is 32-bit arithmetic with a
// truncated offset; crc32 returns 15 bits; crc16 is never masked; murmur is
// seeded with 0xdeadbeef*len; hsieh starts at 0; jenkins is lookup3 with
// initval 13.
package hashkit

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
	"sort"
)

// Func hashes a key to 32 bits.
type Func func(key []byte) uint32

// Names lists the hash names twemproxy accepts, in its order.
var Names = []string{"one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"}

// ByName returns the hash function called name in twemproxy's config.
func ByName(name string) (Func, error) {
	switch name {
	case "one_at_a_time":
		return OneAtATime, nil
	case "md5":
		return MD5, nil
	case "crc16":
		return CRC16, nil
	case "crc32":
		return CRC32, nil
	case "crc32a":
		return CRC32a, nil
	case "fnv1_64":
		return FNV1_64, nil
	case "fnv1a_64":
		return FNV1a_64, nil
	case "fnv1_32":
		return FNV1_32, nil
	case "fnv1a_32":
		return FNV1a_32, nil
	case "hsieh":
		return Hsieh, nil
	case "murmur":
		return Murmur, nil
	case "jenkins":
		return Jenkins, nil
	}
	names := append([]string(nil), Names...)
	sort.Strings(names)
	return nil, fmt.Errorf("unknown hash %q (want one of %v)", name, names)
}

// sext is a C char widened to uint32: bytes >= 0x80 are negative.
func sext(b byte) uint32 { return uint32(int32(int8(b))) }

// FNV1a_64 is twemproxy's fnv1a_64: 32-bit FNV-1a with the 64-bit offset
// truncated (0x84222325) and prime 0x1b3.
func FNV1a_64(key []byte) uint32 {
	h := uint32(0x84222325)
	for _, b := range key {
		h ^= sext(b)
		h *= 0x1b3
	}
	return h
}

// FNV1_64 is 64-bit FNV-1, truncated to 32 bits.
func FNV1_64(key []byte) uint32 {
	h := uint64(0xcbf29ce484222325)
	for _, b := range key {
		h *= 0x100000001b3
		h ^= uint64(int64(int8(b)))
	}
	return uint32(h)
}

// FNV1a_32 is 32-bit FNV-1a.
func FNV1a_32(key []byte) uint32 {
	h := uint32(2166136261)
	for _, b := range key {
		h ^= sext(b)
		h *= 16777619
	}
	return h
}

// FNV1_32 is 32-bit FNV-1.
func FNV1_32(key []byte) uint32 {
	h := uint32(2166136261)
	for _, b := range key {
		h *= 16777619
		h ^= sext(b)
	}
	return h
}

// MD5 is the little-endian first word of the MD5 digest.
func MD5(key []byte) uint32 {
	d := md5.Sum(key)
	return binary.LittleEndian.Uint32(d[:4])
}

// CRC32 is libmemcached's: the upper half of CRC-32, 15 bits.
func CRC32(key []byte) uint32 { return (crc32.ChecksumIEEE(key) >> 16) & 0x7fff }

// CRC32a is standard CRC-32 (IEEE).
func CRC32a(key []byte) uint32 { return crc32.ChecksumIEEE(key) }

// crc16Table is CRC-16/XMODEM (poly 0x1021).
var crc16Table = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 8
		for j := 0; j < 8; j++ {
			if c&0x8000 != 0 {
				c = (c << 1) ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c & 0xffff
	}
	return t
}()

// CRC16 is XMODEM in a uint32 that is never masked: the low 16 bits are the
// CRC, the high bits residue, as in twemproxy.
func CRC16(key []byte) uint32 {
	var crc uint32
	for _, b := range key {
		crc = (crc << 8) ^ crc16Table[((crc>>8)^uint32(b))&0xff]
	}
	return crc
}

// OneAtATime is Jenkins' one-at-a-time hash.
func OneAtATime(key []byte) uint32 {
	var v uint32
	for _, b := range key {
		v += sext(b)
		v += v << 10
		v ^= v >> 6
	}
	v += v << 3
	v ^= v >> 11
	v += v << 15
	return v
}

// Murmur is MurmurHash2 seeded with 0xdeadbeef*len.
func Murmur(key []byte) uint32 {
	const m, r = 0x5bd1e995, 24
	n := uint32(len(key))
	h := (0xdeadbeef * n) ^ n
	for len(key) >= 4 {
		k := binary.LittleEndian.Uint32(key)
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
		key = key[4:]
	}
	switch len(key) {
	case 3:
		h ^= uint32(key[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(key[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(key[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// Hsieh is Paul Hsieh's SuperFastHash started at 0 (not at the length).
func Hsieh(key []byte) uint32 {
	if len(key) == 0 {
		return 0
	}
	get16 := func(b []byte) uint32 { return uint32(b[1])<<8 + uint32(b[0]) }
	var h uint32
	rem := len(key) & 3
	for n := len(key) >> 2; n > 0; n-- {
		h += get16(key)
		tmp := (get16(key[2:]) << 11) ^ h
		h = (h << 16) ^ tmp
		key = key[4:]
		h += h >> 11
	}
	switch rem {
	case 3:
		h += get16(key)
		h ^= h << 16
		h ^= sext(key[2]) << 18
		h += h >> 11
	case 2:
		h += get16(key)
		h ^= h << 11
		h += h >> 17
	case 1:
		h += uint32(key[0])
		h ^= h << 10
		h += h >> 1
	}
	h ^= h << 3
	h += h >> 5
	h ^= h << 4
	h += h >> 17
	h ^= h << 25
	h += h >> 6
	return h
}

// Jenkins is Bob Jenkins' lookup3 hashlittle with initval 13.
func Jenkins(key []byte) uint32 {
	rot := bits.RotateLeft32
	a := 0xdeadbeef + uint32(len(key)) + 13
	b, c := a, a
	for len(key) > 12 {
		a += binary.LittleEndian.Uint32(key)
		b += binary.LittleEndian.Uint32(key[4:])
		c += binary.LittleEndian.Uint32(key[8:])
		a -= c
		a ^= rot(c, 4)
		c += b
		b -= a
		b ^= rot(a, 6)
		a += c
		c -= b
		c ^= rot(b, 8)
		b += a
		a -= c
		a ^= rot(c, 16)
		c += b
		b -= a
		b ^= rot(a, 19)
		a += c
		c -= b
		c ^= rot(b, 4)
		b += a
		key = key[12:]
	}
	if len(key) == 0 {
		return c
	}
	var tail [12]byte
	copy(tail[:], key)
	a += binary.LittleEndian.Uint32(tail[0:])
	b += binary.LittleEndian.Uint32(tail[4:])
	c += binary.LittleEndian.Uint32(tail[8:])
	c ^= b
	c -= rot(b, 14)
	a ^= c
	a -= rot(c, 11)
	b ^= a
	b -= rot(a, 25)
	c ^= b
	c -= rot(b, 16)
	a ^= c
	a -= rot(c, 4)
	b ^= a
	b -= rot(a, 14)
	c ^= b
	c -= rot(b, 24)
	return c
}
