package memcacheproxy

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
)

// Limits of the text protocol, as memcached sets them.
const (
	// MaxKey is memcached's KEY_MAX_LENGTH.
	MaxKey = 250
	// MaxLine bounds a command line: a multi-get of many keys is the
	// longest (memcached reads such lines in pieces; attache holds one).
	MaxLine = 64 << 10
	// MaxKeys bounds the keys of one retrieval command.
	MaxKeys = 1024
)

// kind is what a command does, which decides how it is routed and how its
// reply is read.
type kind int

const (
	retrieval kind = iota // get gets gat gats: any number of keys, VALUE... END
	storage               // set add replace append prepend cas: one key and a data block
	single                // delete incr decr touch: one key, one reply line
	version               // answered by attache
	quit                  // closes the connection
)

// request is one parsed command.
type request struct {
	kind    kind
	cmd     []byte   // the command name
	exptime []byte   // gat and gats: the expiry given before the keys
	keys    [][]byte // retrieval: every key; otherwise the one key
	// args are the tokens after the key, noreply removed (storage: flags
	// exptime bytes [cas]; single: value or exptime).
	args    [][]byte
	noreply bool
	size    int // storage: the data block's length without its CRLF
}

// errLineTooLong is a command line longer than MaxLine: the connection
// cannot find the next command and is closed.
var errLineTooLong = errors.New("line too long")

// clientError is a malformed command: the reply is CLIENT_ERROR with its
// text, and the connection goes on with the next line.
type clientError string

func (e clientError) Error() string { return string(e) }

// unknownCommand is a command the text protocol does not have: the reply
// is memcached's ERROR.
var errUnknown = errors.New("unknown command")

// unsupported is a command attache does not proxy (stats, flush_all,
// verbosity...: they address one server, and a pool has many).
var errUnsupported = errors.New("unsupported command")

// readLine returns the next line without its line end, holding at most
// MaxLine bytes. buf is reused for lines longer than the reader's buffer.
func readLine(r *bufio.Reader, buf []byte) ([]byte, []byte, error) {
	line, err := r.ReadSlice('\n')
	if err == nil {
		return trimEOL(line), buf, nil
	}
	if err != bufio.ErrBufferFull {
		return nil, buf, err
	}
	buf = append(buf[:0], line...)
	for {
		line, err = r.ReadSlice('\n')
		if len(buf)+len(line) > MaxLine {
			return nil, buf, errLineTooLong
		}
		buf = append(buf, line...)
		if err == nil {
			return trimEOL(buf), buf, nil
		}
		if err != bufio.ErrBufferFull {
			return nil, buf, err
		}
	}
}

func trimEOL(line []byte) []byte {
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}

// parse reads a command line. maxValue bounds a storage command's data
// block; a larger one is an error of type tooLarge.
func parse(line []byte, maxValue int) (*request, error) {
	tok := bytes.Fields(line)
	if len(tok) == 0 {
		return nil, errUnknown
	}
	rq := &request{cmd: tok[0]}
	args := tok[1:]
	switch string(tok[0]) {
	case "get", "gets":
		rq.kind = retrieval
	case "gat", "gats":
		rq.kind = retrieval
		if len(args) == 0 || !isInt(args[0]) {
			return nil, clientError("bad command line format")
		}
		rq.exptime, args = args[0], args[1:]
	case "set", "add", "replace", "append", "prepend", "cas":
		rq.kind = storage
	case "delete", "incr", "decr", "touch":
		rq.kind = single
	case "version":
		rq.kind = version
		return rq, nil
	case "quit":
		rq.kind = quit
		return rq, nil
	case "stats", "flush_all", "verbosity", "shutdown", "cache_memlimit", "slabs", "lru_crawler", "watch", "lru", "misbehave",
		"mg", "ms", "md", "ma", "mn", "me":
		return nil, errUnsupported
	default:
		return nil, errUnknown
	}
	if rq.kind == retrieval {
		if len(args) == 0 {
			return nil, errUnknown // memcached: "get" alone is ERROR
		}
		if len(args) > MaxKeys {
			return nil, clientError("too many keys")
		}
		for _, k := range args {
			if len(k) > MaxKey || !validKey(k) {
				return nil, clientError("bad command line format")
			}
		}
		rq.keys = args
		return rq, nil
	}
	if len(args) == 0 || len(args[0]) > MaxKey || !validKey(args[0]) {
		return nil, clientError("bad command line format")
	}
	rq.keys, args = [][]byte{args[0]}, args[1:]
	if n := len(args); n > 0 && string(args[n-1]) == "noreply" {
		rq.noreply, args = true, args[:n-1]
	}
	rq.args = args
	switch string(rq.cmd) {
	case "cas":
		if len(args) != 4 || !isUint(args[3]) {
			return nil, clientError("bad command line format")
		}
		fallthrough
	case "set", "add", "replace", "append", "prepend":
		if len(args) < 3 || !isUint32(args[0]) || !isInt(args[1]) {
			return nil, clientError("bad command line format")
		}
		if string(rq.cmd) != "cas" && len(args) != 3 {
			return nil, clientError("bad command line format")
		}
		n, err := strconv.Atoi(string(args[2]))
		if err != nil || n < 0 {
			return nil, clientError("bad data chunk")
		}
		rq.size = n
		if n > maxValue {
			return rq, tooLarge(n)
		}
	case "delete":
		// delete <key> [0]: memcached still takes a zero hold time.
		if len(args) > 1 || len(args) == 1 && string(args[0]) != "0" {
			return nil, clientError("bad command line format.  Usage: delete <key> [noreply]")
		}
		rq.args = nil
	case "incr", "decr":
		if len(args) != 1 || !isUint(args[0]) {
			return nil, clientError("invalid numeric delta argument")
		}
	case "touch":
		if len(args) != 1 || !isInt(args[0]) {
			return nil, clientError("bad command line format")
		}
	}
	return rq, nil
}

// tooLarge is a storage command whose data block is over the limit: its
// block is read and dropped, and the reply is memcached's SERVER_ERROR.
type tooLarge int

func (tooLarge) Error() string { return "object too large for cache" }

// validKey reports whether k has no control characters (whitespace
// already separates keys).
func validKey(k []byte) bool {
	for _, c := range k {
		if c < 0x21 || c == 0x7f {
			return false
		}
	}
	return true
}

func isUint(b []byte) bool {
	_, err := strconv.ParseUint(string(b), 10, 64)
	return err == nil
}

func isUint32(b []byte) bool {
	_, err := strconv.ParseUint(string(b), 10, 32)
	return err == nil
}

func isInt(b []byte) bool {
	_, err := strconv.ParseInt(string(b), 10, 64)
	return err == nil
}

// line writes the command as a server is sent it: the name, the keys
// given, the arguments, never noreply (attache reads every reply, so that
// a server's error cannot be left unread on a shared connection).
func (rq *request) line(keys [][]byte) []byte {
	b := append([]byte(nil), rq.cmd...)
	if rq.exptime != nil {
		b = append(append(b, ' '), rq.exptime...)
	}
	for _, k := range keys {
		b = append(append(b, ' '), k...)
	}
	for _, a := range rq.args {
		b = append(append(b, ' '), a...)
	}
	return append(b, '\r', '\n')
}
