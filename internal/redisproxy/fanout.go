package redisproxy

import (
	"bytes"
	"strconv"

	"github.com/attache-proxy/attache/internal/resp"
)

// fan is how the replies of a command split over shards are merged.
type fan struct {
	cmd     string  // MGET, MSET, or a command whose integer replies are summed
	keyPart []int32 // the part of each key, in the order of the keys
}

// fanout splits a multi-key command per shard and merges the replies in
// the order of the keys: MGET by position, DEL/UNLINK/EXISTS/TOUCH summed,
// MSET +OK when every shard said OK (not atomic across shards). The plan's
// parts and fan live in the session's scratch until the next command.
func (ss *session) fanout(name string, sp spec, args [][]byte, raw []byte) plan {
	if len(args) < 2 || sp.step == 2 && (len(args)-1)%2 != 0 {
		return errReply("ERR wrong number of arguments for '%s' command", bytes.ToLower(args[0]))
	}
	parts, counts, keyPart := ss.parts[:0], ss.counts[:0], keepKeys(ss.fan.keyPart)
	for i := 1; i < len(args); i += sp.step {
		s := ss.p.shardFor(args[i])
		if s == nil {
			return errReply("ERR attache: no live shard in cluster %s", ss.p.opts.Cluster)
		}
		j := 0
		for j < len(parts) && parts[j].s != s {
			j++
		}
		if j == len(parts) {
			parts = append(parts, part{s: s, again: ss.readOnly})
			counts = append(counts, 0)
		}
		counts[j]++
		keyPart = append(keyPart, int32(j))
	}
	ss.parts, ss.counts, ss.fan = parts, counts, fan{cmd: name, keyPart: keyPart}
	if len(parts) == 1 {
		return ss.forward(args[1], raw)
	}
	// Every part's command goes into one buffer; counts become the ends.
	b := ss.command[:0]
	if cap(b) > 64<<10 {
		b = nil
	}
	for j := range parts {
		b = append(b, '*')
		b = strconv.AppendInt(b, int64(1+counts[j]*sp.step), 10)
		b = append(b, '\r', '\n')
		b = resp.AppendBulk(b, args[0])
		for k, i := 0, 1; i < len(args); k, i = k+1, i+sp.step {
			if keyPart[k] == int32(j) {
				for _, a := range args[i : i+sp.step] {
					b = resp.AppendBulk(b, a)
				}
			}
		}
		counts[j] = len(b)
	}
	ss.command = b
	start := 0
	for j := range parts {
		parts[j].raw = b[start:counts[j]]
		start = counts[j]
	}
	return plan{parts: parts, fan: &ss.fan}
}

// keepKeys returns k emptied for reuse, or nil if a command of many keys
// grew it: a session or a free slot keeps no large scratch.
func keepKeys(k []int32) []int32 {
	if cap(k) > 4096 {
		return nil
	}
	return k[:0]
}

// merge appends to dst the client's reply made from the parts' results
// (outs[j] from shards[j]): the first error if any, else the merged reply.
func (f *fan) merge(dst []byte, outs [][]byte, shards []*server) []byte {
	for _, out := range outs {
		if len(out) > 0 && out[0] == '-' {
			return append(dst, out...)
		}
	}
	switch f.cmd {
	case "MGET":
		var curs [16]int
		cur := curs[:0]
		if len(outs) > len(curs) {
			cur = make([]int, 0, len(outs))
		}
		for j, out := range outs {
			n, hdr, err := resp.ArrayHeader(out)
			want := 0
			for _, p := range f.keyPart {
				if p == int32(j) {
					want++
				}
			}
			if err != nil || n != want {
				return resp.AppendError(dst, "ERR attache: unexpected MGET reply from shard "+shards[j].name)
			}
			cur = append(cur, hdr)
		}
		start := len(dst)
		dst = append(dst, '*')
		dst = strconv.AppendInt(dst, int64(len(f.keyPart)), 10)
		dst = append(dst, '\r', '\n')
		for _, j := range f.keyPart {
			out := outs[j][cur[j]:]
			n, err := resp.ReplyLen(out)
			if err != nil || n == 0 {
				return resp.AppendError(dst[:start], "ERR attache: unexpected MGET reply from shard "+shards[j].name)
			}
			dst = append(dst, out[:n]...)
			cur[j] += n
		}
		return dst
	case "MSET":
		return append(dst, "+OK\r\n"...)
	}
	var sum int64
	for j, out := range outs {
		n, ok := resp.Int(out)
		if !ok {
			return resp.AppendError(dst, "ERR attache: unexpected "+f.cmd+" reply from shard "+shards[j].name)
		}
		sum += n
	}
	return resp.AppendInt(dst, sum)
}
