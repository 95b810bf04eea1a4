package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

const opTimeout = 10 * time.Second

// tcp: echo lines through a TLS listener. A connection carries up to 50
// requests; since is when it was opened, so a request on a connection
// spliced to a backend that was killed counts as in flight at the kill.
// No writes: the check has nothing to count.
func (d *driver) tcp() (func() (worker, error), func(*tls.Config) error, func() (int, int, string, error)) {
	newWorker := func() (worker, error) { return &tcpWorker{d: d, cfg: d.tls}, nil }
	probe := func(cfg *tls.Config) error {
		w := &tcpWorker{d: d, cfg: cfg}
		defer w.close()
		_, _, _, err := w.do(rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano()))))
		return err
	}
	check := func() (int, int, string, error) { return 0, 0, "", nil }
	return newWorker, probe, check
}

type tcpWorker struct {
	d      *driver
	cfg    *tls.Config
	conn   net.Conn
	r      *bufio.Reader
	opened time.Time
	n      int
}

func (w *tcpWorker) do(rnd *rand.Rand) (bool, int64, time.Time, error) {
	if w.conn != nil && w.n >= 50 {
		w.close()
	}
	if w.conn == nil {
		w.opened = time.Now()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: opTimeout}, "tcp", w.d.opt.addr, w.cfg)
		if err != nil {
			return false, 0, w.opened, fmt.Errorf("dial: %w", err)
		}
		w.conn, w.r, w.n = c, bufio.NewReader(c), 0
	}
	w.n++
	msg := fmt.Sprintf("%d %016x%016x\n", w.d.nextID(), rnd.Uint64(), rnd.Uint64())
	w.conn.SetDeadline(time.Now().Add(opTimeout))
	if _, err := io.WriteString(w.conn, msg); err != nil {
		w.close()
		return false, 0, w.opened, fmt.Errorf("write: %w", err)
	}
	line, err := w.r.ReadString('\n')
	if err != nil {
		w.close()
		return false, 0, w.opened, fmt.Errorf("read: %w", err)
	}
	if line != msg {
		w.close()
		return false, 0, w.opened, fmt.Errorf("echo: got %q, want %q", line, msg)
	}
	return false, 0, w.opened, nil
}

func (w *tcpWorker) close() {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}

// http: half GET /get, half POST /write with a fresh id, half the workers
// over HTTP/1.1 keep-alive and half over h2 (ALPN). A write is
// acknowledged by 200 "stored ID"; the check counts the ids in the
// backends' logs.
func (d *driver) http() (func() (worker, error), func(*tls.Config) error, func() (int, int, string, error)) {
	h1 := &http.Client{Timeout: opTimeout, Transport: &http.Transport{TLSClientConfig: d.tls.Clone(), MaxIdleConnsPerHost: 64}}
	h2 := &http.Client{Timeout: opTimeout, Transport: &http.Transport{TLSClientConfig: d.tls.Clone(), ForceAttemptHTTP2: true}}
	n := 0
	newWorker := func() (worker, error) {
		n++
		if n%2 == 0 {
			return &httpWorker{d: d, cl: h2}, nil
		}
		return &httpWorker{d: d, cl: h1}, nil
	}
	probe := func(cfg *tls.Config) error {
		tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		return (&httpWorker{d: d, cl: &http.Client{Timeout: opTimeout, Transport: tr}}).get()
	}
	check := func() (int, int, string, error) {
		counts, err := readIDs(d.opt.webLogs)
		if err != nil {
			return 0, 0, "", err
		}
		return d.compare(counts)
	}
	return newWorker, probe, check
}

type httpWorker struct {
	d  *driver
	cl *http.Client
}

func (w *httpWorker) do(rnd *rand.Rand) (bool, int64, time.Time, error) {
	if rnd.IntN(2) == 0 {
		return false, 0, time.Time{}, w.get()
	}
	id := w.d.nextID()
	resp, err := w.cl.Post("https://"+w.d.opt.addr+"/write", "text/plain", strings.NewReader(strconv.FormatInt(id, 10)))
	if err != nil {
		return true, id, time.Time{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return true, id, time.Time{}, fmt.Errorf("POST body: %w", err)
	}
	if want := fmt.Sprintf("stored %d", id); resp.StatusCode != 200 || string(b) != want {
		return true, id, time.Time{}, fmt.Errorf("POST: got %d %q, want 200 %q", resp.StatusCode, trim(b), want)
	}
	return true, id, time.Time{}, nil
}

func (w *httpWorker) get() error {
	resp, err := w.cl.Get("https://" + w.d.opt.addr + "/get")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET body: %w", err)
	}
	if resp.StatusCode != 200 || string(b) != "ok" {
		return fmt.Errorf("GET: got %d %q, want 200 \"ok\"", resp.StatusCode, trim(b))
	}
	return nil
}

func (w *httpWorker) close() {}

func trim(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 80 {
		b = b[:80]
	}
	return string(b)
}

// compare counts acknowledged ids missing from counts (lost) and ids
// present more than once (duplicated), acknowledged or not.
func (d *driver) compare(counts map[int64]int) (int, int, string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	lost, dup, unacked := 0, 0, 0
	ack := make(map[int64]bool, len(d.acked))
	for _, id := range d.acked {
		ack[id] = true
		if counts[id] == 0 {
			lost++
		}
	}
	for id, n := range counts {
		if n > 1 {
			dup++
		}
		if !ack[id] {
			unacked++
		}
	}
	return lost, dup, fmt.Sprintf("%d writes applied without an acknowledgement (failed in flight; allowed)", unacked), nil
}

// redis: half INCR of a fresh key soak:ID (acknowledged by the reply 1),
// half GET of an acknowledged key (which must be "1"). go-redis with its
// own retries off, so that a duplicate is attache's. The check reads every
// shard directly: an acknowledged key on no shard is lost, a key above 1
// or on two shards is duplicated.
func (d *driver) redis() (func() (worker, error), func(*tls.Config) error, func() (int, int, string, error)) {
	cl := redis.NewClient(&redis.Options{
		Addr: d.opt.addr, TLSConfig: d.tls.Clone(), Protocol: 2, DisableIdentity: true,
		MaxRetries: -1, PoolSize: d.opt.workers, DialTimeout: opTimeout, ReadTimeout: opTimeout, WriteTimeout: opTimeout,
	})
	newWorker := func() (worker, error) { return &redisWorker{d: d, cl: cl}, nil }
	probe := func(cfg *tls.Config) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: opTimeout}, "tcp", d.opt.addr, cfg)
		if err != nil {
			return fmt.Errorf("dial: %w", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(opTimeout))
		if _, err := io.WriteString(c, "*1\r\n$4\r\nPING\r\n"); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("PING: %w", err)
		}
		if line != "+PONG\r\n" {
			return fmt.Errorf("PING: got %q, want +PONG", line)
		}
		return nil
	}
	check := func() (int, int, string, error) {
		defer cl.Close()
		return d.checkShards()
	}
	return newWorker, probe, check
}

type redisWorker struct {
	d  *driver
	cl *redis.Client
}

func (w *redisWorker) do(rnd *rand.Rand) (bool, int64, time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if id := w.d.ackedID(rnd); id != 0 && rnd.IntN(2) == 0 {
		v, err := w.cl.Get(ctx, "soak:"+strconv.FormatInt(id, 10)).Result()
		if errors.Is(err, redis.Nil) {
			return false, 0, time.Time{}, fmt.Errorf("GET of an acknowledged key: nil")
		}
		if err == nil && v != "1" {
			err = fmt.Errorf("GET of an acknowledged key: got %q, want \"1\"", v)
		}
		return false, 0, time.Time{}, err
	}
	id := w.d.nextID()
	n, err := w.cl.Incr(ctx, "soak:"+strconv.FormatInt(id, 10)).Result()
	if err == nil && n != 1 {
		err = fmt.Errorf("INCR of a fresh key: got %d, want 1", n)
	}
	return true, id, time.Time{}, err
}

func (w *redisWorker) close() {}

// checkShards reads every soak: key of every shard, directly.
func (d *driver) checkShards() (int, int, string, error) {
	counts := map[int64]int{}
	for _, addr := range d.opt.shards {
		s := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		iter := s.Scan(ctx, 0, "soak:*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		err := iter.Err()
		for i := 0; err == nil && i < len(keys); i += 500 {
			batch := keys[i:min(i+500, len(keys))]
			var vals []any
			vals, err = s.MGet(ctx, batch...).Result()
			for j, v := range vals {
				id, _ := strconv.ParseInt(strings.TrimPrefix(batch[j], "soak:"), 10, 64)
				n, _ := strconv.Atoi(fmt.Sprint(v))
				counts[id] += n
			}
		}
		cancel()
		s.Close()
		if err != nil {
			return 0, 0, "", fmt.Errorf("shard %s: %w", addr, err)
		}
	}
	return d.compare(counts)
}

// postgres: each worker its own pgx connection through the TLS-requiring
// listener (transaction pooling, target primary): half INSERT of a fresh
// id into soak (acknowledged by the INSERT's success: autocommit), half a
// count of an acknowledged id (which must be 1). The table has no unique
// key, so the check on the primary finds duplicates by count.
func (d *driver) postgres() (func() (worker, error), func(*tls.Config) error, func() (int, int, string, error)) {
	newWorker := func() (worker, error) { return &pgWorker{d: d}, nil }
	probe := func(cfg *tls.Config) error {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		c, err := d.pgConnect(ctx, cfg)
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
		var one int
		return c.QueryRow(ctx, "SELECT 1").Scan(&one)
	}
	check := func() (int, int, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		primary, err := d.pgPrimary(ctx)
		if err != nil {
			return 0, 0, "", err
		}
		defer primary.Close(context.Background())
		rows, err := primary.Query(ctx, "SELECT id, count(*) FROM soak GROUP BY id")
		if err != nil {
			return 0, 0, "", err
		}
		counts := map[int64]int{}
		for rows.Next() {
			var id, n int64
			if err := rows.Scan(&id, &n); err != nil {
				return 0, 0, "", err
			}
			counts[id] = int(n)
		}
		if err := rows.Err(); err != nil {
			return 0, 0, "", err
		}
		return d.compare(counts)
	}
	return newWorker, probe, check
}

func (d *driver) pgConnect(ctx context.Context, tc *tls.Config) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s@%s/%s?sslmode=require&connect_timeout=10", d.opt.pgUser, d.opt.addr, d.opt.pgDatabase))
	if err != nil {
		return nil, err
	}
	cfg.Password = d.opt.pgPassword
	cfg.TLSConfig = tc
	cfg.Fallbacks = nil
	return pgx.ConnectConfig(ctx, cfg)
}

// pgPrimary connects, without TLS, to the one server not in recovery.
func (d *driver) pgPrimary(ctx context.Context) (*pgx.Conn, error) {
	for _, addr := range d.opt.pgServers {
		cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", d.opt.pgUser, addr, d.opt.pgDatabase))
		if err != nil {
			return nil, err
		}
		cfg.Password = d.opt.pgPassword
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			continue
		}
		var standby bool
		if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err == nil && !standby {
			return c, nil
		}
		c.Close(ctx)
	}
	return nil, fmt.Errorf("no primary among %v", d.opt.pgServers)
}

type pgWorker struct {
	d    *driver
	conn *pgx.Conn
}

// pgOpTimeout bounds a statement: above the listener's query_wait_timeout,
// so a transaction waiting for a primary ends by attache's answer.
const pgOpTimeout = 45 * time.Second

func (w *pgWorker) do(rnd *rand.Rand) (write bool, id int64, since time.Time, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgOpTimeout)
	defer cancel()
	defer func() {
		if err != nil && w.conn != nil {
			w.close()
		}
	}()
	read := w.d.ackedID(rnd)
	write = read == 0 || rnd.IntN(2) == 0
	if write {
		id = w.d.nextID()
	}
	if w.conn == nil {
		if w.conn, err = w.d.pgConnect(ctx, w.d.tls.Clone()); err != nil {
			w.conn = nil
			return write, id, time.Time{}, fmt.Errorf("connect: %w", err)
		}
	}
	if write {
		_, err = w.conn.Exec(ctx, "INSERT INTO soak (id) VALUES ($1)", id)
		return write, id, time.Time{}, err
	}
	var n int
	if err = w.conn.QueryRow(ctx, "SELECT count(*) FROM soak WHERE id = $1", read).Scan(&n); err == nil && n != 1 {
		err = fmt.Errorf("count of an acknowledged id: got %d, want 1", n)
	}
	return false, 0, time.Time{}, err
}

func (w *pgWorker) close() {
	if w.conn != nil {
		w.conn.Close(context.Background())
		w.conn = nil
	}
}
