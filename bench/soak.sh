#!/usr/bin/env bash
# bench/soak.sh: proof that nothing is lost. For each protocol, real
# clients (bench/soak: crypto/tls, net/http h1 and h2, go-redis, pgx) send
# load through attache (built from the tree) to real backends for DURATION
# seconds, over a TLS listener, while this script
#   - reloads the configuration RELOADS times, alternating two valid files
#     that differ in a listener's max_connections and a cluster's
#     connect_timeout, by SIGHUP and POST /reload in turn (the file watch
#     sees each change too);
#   - rotates the listener's certificate ROTATIONS times (a Kubernetes
#     Secret style ..data symlink swap, a new key and certificate from a
#     CA made here); a probe opens a new TLS connection every 300 ms and
#     must see every certificate, in order;
#   - tcp, http, redis: stops one backend gracefully (SIGTERM) at 15% and
#     restarts it at 25%, kills another (SIGKILL) at 40% and restarts it at
#     50%. tcp: two echo servers; http: two Go servers that append each
#     POSTed id to a file before answering; redis: three shards
#     (appendonly, appendfsync always, so an acknowledged write survives
#     its server's SIGKILL);
#   - postgres: a primary and a standby (initdb, pg_basebackup -R,
#     synchronous_standby_names '*', so a commit acknowledged is on the
#     standby) behind a target: primary transaction-pooling listener; at
#     20% the primary is stopped (fast shutdown) and the standby promoted,
#     at 60% the new primary is killed (SIGKILL) and the other promoted;
#     after each failover the old primary is cloned again as the standby.
#
# Then it checks the backends directly and prints a row per protocol:
#   sent, ok, failed        requests (reads and writes; probes included)
#   term/kill               failed in flight at a SIGTERM / SIGKILL of a
#                           backend (tcp: on a connection open at the kill)
#   down                    redis: failed while a shard was down (from the
#                           kill to 3 s after it was back) with attache's
#                           error naming that shard, or the shard's LOADING
#   other                   every other failure: should be 0 (tcp and http
#                           have another endpoint; postgres transactions
#                           wait for the promoted standby)
#   w-acked, lost, dup      acknowledged writes; of those, missing from the
#                           backends afterwards; ids stored more than once
#                           (http POST ids, redis INCR of fresh keys,
#                           postgres INSERT into a table without a key)
#   certs                   certificates the probes saw / certificates used
#   reloads, tls-err        attache_config_reloads_total success/failure,
#                           attache_tls_reload_errors_total
# The aim: lost, dup and other 0, every certificate seen, no reload failed.
# The exit status is 1 when a protocol misses it.
#
#   bench/soak.sh                              # DURATION=60 RELOADS=100, all four
#   DURATION=10 RELOADS=20 PROTOCOLS=redis bench/soak.sh
#   KEEP=/tmp/soak bench/soak.sh               # keep logs and fault logs there
#   RATE=400 WORKERS=8 ROTATIONS=3             # per protocol (defaults)
#   RELOAD_CHANGE=listener bench/soak.sh       # the files differ in max_connections
#                                              # only (cluster: connect_timeout only)
#   FAULTS="reload kill" bench/soak.sh         # only these (of reload rotate kill;
#                                              # kill is the failovers for postgres)
#
# Loopback only; every process is stopped by PID. Needs redis-server,
# PostgreSQL 15+ server binaries, openssl and curl (Debian packages
# redis-server, postgresql, openssl, curl; installed with apt-get as root).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}
RELOADS=${RELOADS:-100}
ROTATIONS=${ROTATIONS:-3}
PROTOCOLS=${PROTOCOLS:-tcp http redis postgres}
WORKERS=${WORKERS:-8}
RATE=${RATE:-400}
FAULTS=${FAULTS:-reload rotate kill}
RELOAD_CHANGE=${RELOAD_CHANGE:-both} # what the two files differ in: listener | cluster | both
has() { [[ " $FAULTS " == *" $1 "* ]]; }

. bench/lib.sh
require redis-server:redis-server openssl:openssl curl:curl
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -1)
[ -x "$pgbin/initdb" ] || { require initdb:postgresql; pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k5 -n | tail -1); }

declare -A bport bpid pgport pgpid
keep() {
  # A smart shutdown (SIGTERM) waits for sessions, which may wait for a
  # synchronous standby that is gone: PostgreSQL gets a fast one.
  for p in "${pgpid[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; find "$work" -maxdepth 2 \( -name '*.log' -o -name row -o -name '*.yaml' \) -exec cp --parents {} "$KEEP" \; 2>/dev/null || true; fi
  cleanup
}
trap keep EXIT

# PostgreSQL refuses to run as root: run it as postgres.
asuser=()
if [ "$(id -u)" = 0 ]; then asuser=(setpriv --reuid=postgres --regid=postgres --init-groups); fi
chmod 755 "$work"

echo "building attache and the load driver ..." >&2
make -s build >/dev/null
go build -o "$work/soak" ./bench/soak

# The CA every listener certificate is signed by.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/ca.key" \
  -out "$work/ca.crt" -subj /CN=soak-ca -days 2 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$work/leaf.ext"

# now: microseconds since the epoch, times 1000 (nanoseconds for the log).
now() { local t=${EPOCHREALTIME/./}; echo "${t}000"; }
sleep_us() { sleep "$(($1 / 1000000)).$(printf %06d $(($1 % 1000000)))"; }
# ev KIND [ARG]: a fault log line for an instant event.
ev() { local t; t=$(now); echo "$t $t $*" >> "$faults"; }

# rotate: a new key and certificate for the listener, swapped in at once
# through the ..data symlink, as a Kubernetes Secret volume does.
rotate() {
  # Probes must have a chance to see each certificate: 1.5 s at least.
  local since=$(( ${EPOCHREALTIME/./} - ${last_rotate:-0} ))
  if [ "$since" -lt 1500000 ]; then sleep_us $((1500000 - since)); fi
  cert_n=$((cert_n + 1))
  local v="$tlsdir/..v$cert_n" cn="soak-$proto-$cert_n"
  mkdir -p "$v"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$v/tls.key" -out "$v/tls.csr" \
    -subj "/CN=$cn" 2>/dev/null
  openssl x509 -req -in "$v/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -set_serial "$((RANDOM * 32768 + RANDOM))" \
    -days 2 -extfile "$work/leaf.ext" -out "$v/tls.crt" 2>/dev/null
  ln -sfn "..v$cert_n" "$tlsdir/..data.tmp"
  mv -T "$tlsdir/..data.tmp" "$tlsdir/..data"
  [ -e "$tlsdir/tls.crt" ] || { ln -s ..data/tls.crt "$tlsdir/tls.crt"; ln -s ..data/tls.key "$tlsdir/tls.key"; }
  ev cert "$cn"
  last_rotate=${EPOCHREALTIME/./}
}

# Backends of tcp, http and redis, by name: port and PID.

start_backend() {
  local n=$1 p=${bport[$1]}
  case $proto in
    tcp) "$work/soak" echo -addr "127.0.0.1:$p" 2>>"$dir/$n.log" & ;;
    http) "$work/soak" web -addr "127.0.0.1:$p" -log "$dir/ids-$n" 2>>"$dir/$n.log" & ;;
    redis) mkdir -p "$dir/$n"
      redis-server --bind 127.0.0.1 --port "$p" --save "" --appendonly yes --appendfsync always \
        --dir "$dir/$n" --logfile "$dir/$n.log" & ;;
  esac
  bpid[$n]=$!; pids+=($!); ppids+=($!)
  waitport "$p"
}
# kill_backend NAME SIGNAL: logs T0 (before the signal) and T1 (after the
# process has exited).
kill_backend() {
  local t0 kind=kill-term
  [ "$2" = KILL ] && kind=kill-kill
  t0=$(now)
  kill -"$2" "${bpid[$1]}" 2>/dev/null || true
  wait "${bpid[$1]}" 2>/dev/null || true
  echo "$t0 $(now) $kind $1" >> "$faults"
}
up_backend() { start_backend "$1"; ev up "$1"; }

# PostgreSQL: data directories n1 and n2; prim and stby name the current
# primary and standby.

pg() { "$pgbin/psql" -X -q -tA -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"; }
pg_start() {
  "${asuser[@]}" "$pgbin/postgres" -D "$dir/$1" -p "${pgport[$1]}" -k "$dir" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c max_connections=100 -c shared_buffers=32MB -c wal_level=replica -c max_wal_senders=10 \
    -c wal_keep_size=64MB -c hot_standby=on -c wal_receiver_status_interval=1s -c "synchronous_standby_names=*" \
    >>"$dir/$1.log" 2>&1 &
  pgpid[$1]=$!; pids+=($!); ppids+=($!)
  waitport "${pgport[$1]}"
  for _ in $(seq 1 200); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "${pgport[$1]}" && return 0; sleep 0.1; done
  echo "soak: postgres $1 not ready"; tail -20 "$dir/$1.log"; exit 1
}
# pg_clone NAME FROM: NAME becomes a streaming standby of FROM.
pg_clone() {
  rm -rf "${dir:?}/$1"
  "${asuser[@]}" "$pgbin/pg_basebackup" -h 127.0.0.1 -p "${pgport[$2]}" -U postgres -D "$dir/$1" -R -X stream -c fast \
    --no-sync >>"$dir/basebackup.log" 2>&1 || { cat "$dir/basebackup.log"; exit 1; }
  pg_start "$1"
  for _ in $(seq 1 300); do
    [ "$(pg "${pgport[$2]}" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null)" = 1 ] && return 0
    sleep 0.1
  done
  echo "soak: standby $1 not streaming"; tail -20 "$dir/$1.log"; exit 1
}
# pg_failover term|kill: stops the primary (fast shutdown, or SIGKILL of
# the postmaster), promotes the standby, clones the old primary's
# directory again as the new standby.
pg_failover() {
  local t0 sig=INT
  [ "$1" = kill ] && sig=KILL
  # The kill ends when the postmaster's children are gone too: after a
  # SIGKILL they serve their sessions until they notice its death.
  local kids k
  kids=$(pgrep -P "${pgpid[$prim]}" || true)
  t0=$(now)
  kill -"$sig" "${pgpid[$prim]}" 2>/dev/null || true
  wait "${pgpid[$prim]}" 2>/dev/null || true
  for k in $kids; do for _ in $(seq 1 100); do kill -0 "$k" 2>/dev/null || break; sleep 0.05; done; done
  echo "$t0 $(now) kill-$1 pg" >> "$faults"
  t0=$(now)
  "${asuser[@]}" "$pgbin/pg_ctl" promote -w -t 60 -D "$dir/$stby" >>"$dir/promote.log" 2>&1
  echo "$t0 $(now) up pg" >> "$faults"
  local old=$prim; prim=$stby; stby=$old
  # After a SIGKILL the old postmaster's children notice its death and
  # exit on their own; its directory is made anew.
  pg_clone "$stby" "$prim"
  ev standby-up pg
}

# at PERMILLE: sleeps until that part of DURATION since $t_start.
at() {
  local target=$((t_start + $1 * DURATION * 1000)) d
  d=$((target - ${EPOCHREALTIME/./}))
  if [ "$d" -gt 0 ]; then sleep_us "$d"; fi
}

# reloads: RELOADS reloads spread over DURATION, alternating the two
# configuration files, by SIGHUP and POST /reload in turn.
reloads() {
  local i gap=$((DURATION * 950000 / (RELOADS + 1)))
  for i in $(seq 1 "$RELOADS"); do
    sleep_us "$gap"
    if [ $((i % 2)) = 1 ]; then cp "$dir/b.yaml" "$dir/next.yaml"; else cp "$dir/a.yaml" "$dir/next.yaml"; fi
    mv -f "$dir/next.yaml" "$dir/attache.yaml"
    if [ $((i % 4)) -lt 2 ]; then
      kill -HUP "$APID"; ev reload "hup-$i"
    else
      curl -s -m 10 -o /dev/null -X POST "http://127.0.0.1:$ADM/reload"; ev reload "post-$i"
    fi
  done
}

# config: the protocol's attache configuration as a.yaml and b.yaml.
config() {
  local tls="{cert_file: $tlsdir/tls.crt, key_file: $tlsdir/tls.key}"
  {
    echo "admin: {address: \"127.0.0.1:$ADM\"}"
    echo "log: {level: info}"
    echo "listeners:"
    echo "  - name: soak"
    echo "    address: 127.0.0.1:$AP"
    echo "    protocol: $proto"
    echo "    max_connections: 10000"
    case $proto in
      tcp|redis) echo "    cluster: backends"; echo "    tls: $tls" ;;
      http)
        echo "    tls: $tls"
        echo "    routes:"
        echo "      - match: {prefix: /}"
        echo "        to: [{cluster: backends}]"
        echo "        timeout: 10s"
        echo "        retries: {attempts: 3, on: [5xx, connect_failure, reset], per_try_timeout: 5s}" ;;
      postgres)
        echo "    cluster: backends"
        echo "    postgres:"
        echo "      pool_mode: transaction"
        echo "      pool_size: 10"
        echo "      target: primary"
        echo "      query_wait_timeout: 30s"
        echo "      auth: {users_file: $dir/users.txt}"
        echo "      client_tls: {cert_file: $tlsdir/tls.crt, key_file: $tlsdir/tls.key, mode: require}" ;;
    esac
    echo "clusters:"
    echo "  - name: backends"
    echo "    connect_timeout: 5s"
    case $proto in
      tcp) echo "    endpoints: [\"127.0.0.1:${bport[e0]}\", \"127.0.0.1:${bport[e1]}\"]"
        echo "    health_check: {type: tcp, interval: 1s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1}" ;;
      http) echo "    endpoints: [\"127.0.0.1:${bport[w0]}\", \"127.0.0.1:${bport[w1]}\"]"
        echo "    health_check: {type: http, path: /healthz, interval: 1s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1}" ;;
      redis) echo "    endpoints: [\"127.0.0.1:${bport[s0]}:1 s0\", \"127.0.0.1:${bport[s1]}:1 s1\", \"127.0.0.1:${bport[s2]}:1 s2\"]"
        echo "    health_check: {type: redis, interval: 1s}"
        echo "    redis: {hash: fnv1a_64, distribution: ketama, timeout: 2s}" ;;
      postgres) echo "    endpoints: [\"127.0.0.1:${pgport[n1]}\", \"127.0.0.1:${pgport[n2]}\"]"
        echo "    health_check: {type: postgres, interval: 1s, timeout: 1s, user: postgres, password: \"$PGPASSWORD\"}" ;;
    esac
  } > "$dir/a.yaml"
  local diff=()
  [ "$RELOAD_CHANGE" = cluster ] || diff+=(-e 's/max_connections: 10000/max_connections: 9999/')
  [ "$RELOAD_CHANGE" = listener ] || diff+=(-e 's/connect_timeout: 5s/connect_timeout: 4s/')
  sed "${diff[@]}" "$dir/a.yaml" > "$dir/b.yaml"
  cmp -s "$dir/a.yaml" "$dir/b.yaml" && { echo "soak: the two configurations are the same"; exit 1; }
  cp "$dir/a.yaml" "$dir/attache.yaml"
}

# setup: the protocol's backends; sets flags (the driver's own).
setup() {
  flags=()
  case $proto in
    tcp) for n in e0 e1; do bport[$n]=$(freeport); start_backend "$n"; done; victims=(e1 e0) ;;
    http) for n in w0 w1; do bport[$n]=$(freeport); start_backend "$n"; done; victims=(w1 w0)
      flags+=(-web-logs "$dir/ids-w0,$dir/ids-w1") ;;
    redis) for n in s0 s1 s2; do bport[$n]=$(freeport); start_backend "$n"; done; victims=(s1 s2)
      flags+=(-shards "127.0.0.1:${bport[s0]},127.0.0.1:${bport[s1]},127.0.0.1:${bport[s2]}") ;;
    postgres)
      export PGPASSWORD="soak-$RANDOM$RANDOM"
      echo "$PGPASSWORD" > "$dir/pw"
      printf '"postgres" "%s"\n' "$PGPASSWORD" > "$dir/users.txt"
      [ ${#asuser[@]} -gt 0 ] && chown -R postgres: "$dir"
      pgport[n1]=$(freeport); pgport[n2]=$(freeport)
      "${asuser[@]}" "$pgbin/initdb" -D "$dir/n1" -U postgres --pwfile "$dir/pw" --auth-host=scram-sha-256 \
        --auth-local=trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; exit 1; }
      echo "host replication all 127.0.0.1/32 scram-sha-256" >> "$dir/n1/pg_hba.conf"
      prim=n1; stby=n2
      pg_start n1
      pg_clone n2 n1
      # After the clone: with synchronous_standby_names a commit waits for a standby.
      pg "${pgport[n1]}" "CREATE TABLE soak (id bigint NOT NULL); CREATE INDEX ON soak (id)"
      flags+=(-pg-servers "127.0.0.1:${pgport[n1]},127.0.0.1:${pgport[n2]}") ;;
  esac
}

# faults: the schedule of kills and restarts, in permille of DURATION.
faults_schedule() {
  local k
  (
    if has rotate; then for k in $(seq 1 "$ROTATIONS"); do echo "$((k * 1000 / (ROTATIONS + 1) + 20)) rotate"; done; fi
    if ! has kill; then :
    elif [ "$proto" = postgres ]; then echo "200 failover term"; echo "600 failover kill"
    else echo "150 kill ${victims[0]} TERM"; echo "250 up ${victims[0]}"; echo "400 kill ${victims[1]} KILL"; echo "500 up ${victims[1]}"; fi
  ) | sort -n
}

run_protocol() {
  proto=$1; dir="$work/$proto"; tlsdir="$dir/tls"; faults="$dir/faults.log"; cert_n=0; ppids=()
  mkdir -p "$tlsdir"; : > "$faults"
  echo "== $proto: setting up" >&2
  setup
  rotate
  AP=$(freeport); ADM=$(freeport)
  config
  bin/attache validate --config "$dir/attache.yaml" >"$dir/validate.log" 2>&1 || { cat "$dir/validate.log"; exit 1; }
  bin/attache run --config "$dir/attache.yaml" 2>"$dir/attache.log" & APID=$!; pids+=($APID)
  waitport "$AP"
  sleep 1.5 # a health check round
  echo "== $proto: ${DURATION}s of load, $RELOADS reloads, $ROTATIONS certificate rotations, kills" >&2
  t_start=${EPOCHREALTIME/./}
  "$work/soak" load -proto "$proto" -addr "127.0.0.1:$AP" -admin "127.0.0.1:$ADM" -ca "$work/ca.crt" \
    -faults "$faults" -failures "$dir/failures.log" -duration "${DURATION}s" -workers "$WORKERS" -rate "$RATE" "${flags[@]}" \
    >"$dir/row" 2>"$dir/driver.log" & DPID=$!; pids+=($DPID)
  RPID=
  if has reload; then reloads & RPID=$!; pids+=($RPID); fi
  while read -r when what a b; do
    at "$when"
    case $what in
      rotate) rotate ;;
      kill) kill_backend "$a" "$b" ;;
      up) up_backend "$a" ;;
      failover) pg_failover "$a" ;;
    esac
  done < <(faults_schedule)
  [ -z "$RPID" ] || wait "$RPID" || true
  ev done
  local rc=0
  wait "$DPID" || rc=$?
  cat "$dir/row" >> "$work/rows"
  sed "s/^/  /" "$dir/driver.log" >&2
  [ "$rc" = 0 ] || failed+=("$proto")
  echo "  attache log: $(grep -c 'level=ERROR' "$dir/attache.log" || true) errors, $(grep -c 'level=WARN' "$dir/attache.log" || true) warnings" >&2
  kill "$APID" 2>/dev/null || true
  wait "$APID" 2>/dev/null || true
  for p in "${ppids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pgpid[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${ppids[@]}"; do wait "$p" 2>/dev/null || true; done
}

failed=()
: > "$work/rows"
for proto in $PROTOCOLS; do run_protocol "$proto"; done
echo
echo "soak: ${DURATION}s per protocol, $RELOADS reloads, $ROTATIONS certificate rotations, rate $RATE/s, $WORKERS clients, faults: $FAULTS"
"$work/soak" header
cat "$work/rows"
if [ ${#failed[@]} -gt 0 ]; then echo "missed the aim: ${failed[*]}"; exit 1; fi
