package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/attache-proxy/attache/internal/testenv"
)

// pgURL is a connection string to an attache listener as pg's superuser.
func pgURL(pg *testenv.PG, addr string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&connect_timeout=10", pg.User, pg.Password, addr)
}

func pgConnect(t *testing.T, pg *testenv.PG, addr string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pgURL(pg, addr))
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func queryString(ctx context.Context, c *pgx.Conn, sql string) (string, error) {
	var s string
	err := c.QueryRow(ctx, sql).Scan(&s)
	return s, err
}

// TestPostgresReadRouting, with a real primary and streaming standby
// behind one cluster (standby listed first): the primary listener writes
// on the primary; the standby listener reads the replicated rows on the
// standby; with replay paused the standby falls behind max_replication_lag
// and is skipped: the standby listener's transaction waits and fails
// clearly at query_wait_timeout, prefer_standby reads on the primary; once
// replay resumes both are back on the standby.
func TestPostgresReadRouting(t *testing.T) {
	primary, standby := testenv.PostgresPair(t)
	users := filepath.Join(t.TempDir(), "users.txt")
	os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", primary.User, primary.Password)), 0o600)
	h := start(t, yamlf(`
listeners:
  - {name: rw, address: "%s", protocol: postgres, cluster: orders,
     postgres: {pool_mode: transaction, target: primary, auth: {users_file: "%s"}}}
  - {name: ro, address: "%s", protocol: postgres, cluster: orders,
     postgres: {pool_mode: transaction, target: standby, max_replication_lag: 2s, query_wait_timeout: 3s, auth: {users_file: "%s"}}}
  - {name: prefer, address: "%s", protocol: postgres, cluster: orders,
     postgres: {pool_mode: transaction, target: prefer_standby, max_replication_lag: 2s, auth: {users_file: "%s"}}}
clusters:
  - name: orders
    endpoints: ["%s", "%s"]
    health_check: {type: postgres, user: postgres, password: "${PGPW}", interval: 1s, timeout: 1s}
`, testenv.FreePort(t), users, testenv.FreePort(t), users, testenv.FreePort(t), users, standby.Addr, primary.Addr),
		map[string]string{"PGPW": primary.Password})
	role := func(addr, r string) string {
		return h.metric(fmt.Sprintf(`attache_cluster_endpoint_role{cluster="orders",endpoint="%s",role="%s"}`, addr, r))
	}
	eventually(t, 30*time.Second, "roles learned", func() bool {
		return role(primary.Addr, "primary") == "1" && role(standby.Addr, "standby") == "1"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	rw, ro, prefer := pgConnect(t, primary, h.addr("rw")), pgConnect(t, primary, h.addr("ro")), pgConnect(t, primary, h.addr("prefer"))
	for name, c := range map[string]*pgx.Conn{"rw": rw, "ro": ro, "prefer": prefer} {
		want := map[string]string{"rw": "false", "ro": "true", "prefer": "true"}[name]
		if got, err := queryString(ctx, c, "SELECT pg_is_in_recovery()::text"); err != nil || got != want {
			t.Errorf("%s listener: pg_is_in_recovery() = %q %v, want %s", name, got, err, want)
		}
	}
	if _, err := rw.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatalf("write through the primary listener: %v", err)
	}
	eventually(t, 20*time.Second, "the row on the standby listener", func() bool {
		n, err := queryString(ctx, ro, "SELECT count(*)::text FROM t")
		return err == nil && n == "1"
	})

	standby.PauseReplay(t)
	lagMetric := `attache_postgres_replication_lag_seconds{cluster="orders",endpoint="` + standby.Addr + `"}`
	eventually(t, 30*time.Second, "lag over 2s with replay paused", func() bool {
		rw.Exec(ctx, "INSERT INTO t VALUES (2)")
		time.Sleep(100 * time.Millisecond)
		lag, err := strconv.ParseFloat(h.metric(lagMetric), 64)
		return err == nil && lag > 2
	})
	if got, err := queryString(ctx, prefer, "SELECT pg_is_in_recovery()::text"); err != nil || got != "false" {
		t.Errorf("prefer_standby with the standby over max_replication_lag: pg_is_in_recovery() = %q %v, want false (the primary)", got, err)
	}
	start := time.Now()
	_, err := queryString(ctx, ro, "SELECT count(*)::text FROM t")
	var pe *pgconn.PgError
	want := `query_wait_timeout: cluster "orders": no healthy standby within max_replication_lag 2s`
	if !errors.As(err, &pe) || pe.Code != "08P01" || pe.Message != want {
		t.Errorf("standby listener with the standby over max_replication_lag: got %v, want 08P01 %q", err, want)
	}
	t.Logf("standby target refused after %v (query_wait_timeout 3s)", time.Since(start).Round(10*time.Millisecond))

	standby.ResumeReplay(t)
	ro = pgConnect(t, primary, h.addr("ro"))
	eventually(t, 30*time.Second, "the standby back within max_replication_lag", func() bool {
		lag, err := strconv.ParseFloat(h.metric(lagMetric), 64)
		return err == nil && lag <= 2
	})
	if got, err := queryString(ctx, ro, "SELECT pg_is_in_recovery()::text"); err != nil || got != "true" {
		t.Errorf("standby listener after replay resumed: %q %v", got, err)
	}
	eventually(t, 10*time.Second, "prefer_standby back on the standby", func() bool {
		got, err := queryString(ctx, prefer, "SELECT pg_is_in_recovery()::text")
		return err == nil && got == "true"
	})
}

// TestPostgresFailover is the seed's failover: 50 pgx clients write, each
// transaction inserting a unique id, through the primary listener; the
// primary stops, the standby is promoted with pg_ctl promote, and the
// writes carry on through the same listener with no reload. Every
// transaction whose COMMIT reported success is on the new primary; the
// time from promotion to the first successful write again is logged, not
// asserted. on_failover runs its command and its webhook with the old and
// new primary.
func TestPostgresFailover(t *testing.T) {
	primary, standby := testenv.PostgresPair(t)
	dir := t.TempDir()
	users := filepath.Join(dir, "users.txt")
	os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", primary.User, primary.Password)), 0o600)
	hookOut := filepath.Join(dir, "hook.out")
	script := filepath.Join(dir, "hook.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $ATTACHE_CLUSTER $ATTACHE_OLD_PRIMARY $ATTACHE_NEW_PRIMARY\" >> "+hookOut+"\n"), 0o755)
	hooked := make(chan map[string]string, 4)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]string
		json.NewDecoder(r.Body).Decode(&ev)
		hooked <- ev
	}))
	defer web.Close()
	h := start(t, yamlf(`
listeners:
  - {name: rw, address: "%s", protocol: postgres, cluster: orders,
     postgres: {pool_mode: transaction, pool_size: 20, target: primary, query_wait_timeout: 60s, auth: {users_file: "%s"}}}
clusters:
  - name: orders
    endpoints: ["%s", "%s"]
    health_check: {type: postgres, user: postgres, password: "${PGPW}", interval: 1s, timeout: 1s}
    on_failover: {command: ["%s", "told"], webhook: "%s/failover", timeout: 5s}
`, testenv.FreePort(t), users, primary.Addr, standby.Addr, script, web.URL), map[string]string{"PGPW": primary.Password})
	primary.SQL(t, "CREATE TABLE ids (id int PRIMARY KEY)")
	eventually(t, 30*time.Second, "the primary known", func() bool {
		p, err := h.app.gen.Load().clusters["orders"].up.Primary()
		return err == nil && p.Addr == primary.Addr
	})
	addr := h.addr("rw")

	const clients = 50
	var (
		nextID    atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		mu        sync.Mutex
		committed []int64 // COMMIT reported success
		failed    []int64 // any error in the transaction
		successAt []time.Time
		errs      = map[string]int{} // failures by SQLSTATE
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
				if conn == nil || conn.IsClosed() {
					c, err := pgx.Connect(ctx, pgURL(primary, addr))
					if err != nil {
						cancel()
						time.Sleep(50 * time.Millisecond)
						continue
					}
					conn = c
				}
				id := nextID.Add(1)
				err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO ids VALUES ($1)", id)
					return err
				})
				cancel()
				mu.Lock()
				if err == nil {
					committed = append(committed, id)
					successAt = append(successAt, time.Now())
				} else {
					failed = append(failed, id)
					var pe *pgconn.PgError
					if errors.As(err, &pe) {
						errs[pe.Code+" "+pe.Message]++
					} else {
						errs[err.Error()]++
					}
				}
				mu.Unlock()
				if err != nil {
					conn.Close(context.Background())
					conn = nil
				}
			}
		}()
	}
	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return len(committed), len(failed)
	}
	eventually(t, 30*time.Second, "writes under load", func() bool { ok, _ := count(); return ok > 500 })

	// When the standby accepts writes, seen directly by polling it.
	direct := pgConnect(t, standby, standby.Addr)
	writable := make(chan time.Time, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		for ctx.Err() == nil {
			if r, err := queryString(ctx, direct, "SELECT pg_is_in_recovery()::text"); err == nil && r == "false" {
				writable <- time.Now()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	primary.Stop()
	stopped := time.Now()
	okAtStop, failedAtStop := count()
	standby.Promote(t)
	promoted := time.Now()
	var wrote time.Time
	select {
	case wrote = <-writable:
	case <-time.After(30 * time.Second):
		t.Fatal("the promoted standby never left recovery")
	}
	eventually(t, 60*time.Second, "writes through the unchanged listener after promotion", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(successAt) > 0 && successAt[len(successAt)-1].After(stopped)
	})
	time.Sleep(2 * time.Second) // more writes on the new primary
	close(stop)
	wg.Wait()

	var firstAfter time.Time
	for _, at := range successAt {
		if at.After(stopped) && (firstAfter.IsZero() || at.Before(firstAfter)) {
			firstAfter = at
		}
	}
	ok, bad := count()
	t.Logf("failover: pg_ctl promote ran %v (the standby left recovery %v after the stop); first write through the unchanged listener %v after the standby left recovery, %v after pg_ctl promote returned (health interval 1s)",
		promoted.Sub(stopped).Round(time.Millisecond), wrote.Sub(stopped).Round(time.Millisecond),
		firstAfter.Sub(wrote).Round(time.Millisecond), firstAfter.Sub(promoted).Round(time.Millisecond))
	t.Logf("transactions: %d committed (%d before the stop), %d failed (%d before the stop): %v", ok, okAtStop, bad, failedAtStop, errs)

	// Every id is read back from the new primary, directly.
	out := standby.SQL(t, "SELECT string_agg(id::text, ',') FROM ids")
	present := map[int64]bool{}
	for _, s := range strings.Split(out, ",") {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			present[n] = true
		}
	}
	var missing []int64
	for _, id := range committed {
		if !present[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
		t.Errorf("%d transactions reported committed are not on the new primary: %v", len(missing), missing[:min(len(missing), 20)])
	}
	lost := 0
	for _, id := range failed {
		if present[id] {
			lost++
		}
	}
	t.Logf("failed transactions that were committed all the same (the COMMIT's reply lost): %d of %d", lost, bad)
	if bad > clients*3 {
		t.Errorf("%d failed transactions for %d clients: the failover should fail about one per client at most", bad, clients)
	}
	if got := h.metric(`attache_cluster_primary_changes_total{cluster="orders"}`); got != "1" {
		t.Errorf("primary changes metric: got %q, want 1", got)
	}
	eventually(t, 20*time.Second, "the hook counted", func() bool {
		return h.metric(`attache_cluster_failover_hooks_total{cluster="orders",result="success"}`) == "1"
	})
	_, body := h.admin("GET", "/status")
	var st pgStatus
	json.Unmarshal([]byte(body), &st)
	for _, l := range st.Listeners {
		for _, p := range l.Pools {
			if p.ServersByEndpoint[primary.Addr] != 0 || p.ServersByEndpoint[standby.Addr] == 0 {
				t.Errorf("/status servers by endpoint after the failover: %v, want only %s", p.ServersByEndpoint, standby.Addr)
			}
		}
	}
	for _, e := range h.app.gen.Load().clusters["orders"].up.Endpoints() {
		if e.Addr == primary.Addr && e.Active() != 0 {
			t.Errorf("%d server connections still open to the old primary", e.Active())
		}
	}
	if got := h.metric(`attache_cluster_split_brain{cluster="orders"}`); got != "0" {
		t.Errorf("split brain gauge after the failover: %q", got)
	}

	select {
	case ev := <-hooked:
		if ev["cluster"] != "orders" || ev["old_primary"] != primary.Addr || ev["new_primary"] != standby.Addr {
			t.Errorf("on_failover webhook: got %v, want orders %s -> %s", ev, primary.Addr, standby.Addr)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("on_failover webhook not called")
	}
	eventually(t, 20*time.Second, "the on_failover command", func() bool {
		b, _ := os.ReadFile(hookOut)
		return strings.TrimSpace(string(b)) == fmt.Sprintf("told orders %s %s", primary.Addr, standby.Addr)
	})
}
