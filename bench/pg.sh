#!/usr/bin/env bash
# bench/pg.sh: pgbench, 100 clients, select-only (-S) and the default
# TPC-B-like script, -M simple and -M prepared (named statements), directly
# to PostgreSQL, through pgbouncer and through attache (both in transaction
# mode with a pool of 20, one thread each: pgbouncer is single-threaded,
# attache runs with GOMAXPROCS=1), interleaved round by round. Prints median
# TPS, average latency, the ratio to direct and each pooler's CPU time per
# transaction (from /proc/PID/stat).
#
# pgbouncer authenticates clients with md5 (its default auth_type with a
# plain secret): with SCRAM it spends seconds deriving a verifier per
# login, which would count in its CPU per transaction. attache uses SCRAM
# with a verifier derived once. CPU ticks cover whole runs, the 100 logins
# included.
#
# pgbench runs one thread per client (-j = -c): -M prepared prepares with a
# blocking PQprepare, which in transaction pooling would stall the other
# clients of a thread, holding their server connections, while it waits.
#
#   bench/pg.sh                 # ROUNDS=3 SECONDS_PER_RUN=10 by default
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-100}
. bench/lib.sh
require pgbench:postgresql-contrib pgbouncer:pgbouncer
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
# as_pg runs a command as the postgres user (PostgreSQL refuses root),
# exec'ing it so that $! is the server's own PID (for its CPU ticks).
# (A variable, not a function: a backgrounded function would be a subshell.)
as_pg=(); [ "$(id -u)" = 0 ] && as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)

PGP=$(freeport); BP=$(freeport); AP=$(freeport); ADM=$(freeport)
chmod 755 "$work"
mkdir -p "$work/data" "$work/run"
[ "$(id -u)" = 0 ] && chown postgres "$work/data" "$work/run"
echo "pw" > "$work/pw"; chmod 644 "$work/pw"
"${as_pg[@]}" "$BIN/initdb" -D "$work/data" -U postgres --pwfile "$work/pw" --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --no-sync --locale=C >/dev/null
"${as_pg[@]}" "$BIN/postgres" -D "$work/data" -p "$PGP" -k "$work/run" -c listen_addresses=127.0.0.1 -c fsync=off \
  -c synchronous_commit=off -c max_connections=150 -c shared_buffers=64MB >"$work/postgres.log" 2>&1 & pids+=($!)
waitport "$PGP"
until "${as_pg[@]}" "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PGP"; do sleep 0.1; done
export PGPASSWORD=pw
pgbench -h 127.0.0.1 -p "$PGP" -U postgres -i -s 10 -q postgres >/dev/null 2>&1

printf '"postgres" "pw"\n' > "$work/run/users.txt"
cat > "$work/run/pgbouncer.ini" <<EOF2
[databases]
postgres = host=127.0.0.1 port=$PGP
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BP
unix_socket_dir =
auth_type = md5
auth_file = $work/run/users.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 1000
logfile = $work/run/pgbouncer.log
EOF2
[ "$(id -u)" = 0 ] && chown postgres "$work/run/pgbouncer.ini" "$work/run/users.txt"
"${as_pg[@]}" pgbouncer "$work/run/pgbouncer.ini" >/dev/null 2>&1 & BPID=$!; pids+=($BPID)
make -s build >/dev/null
cat > "$work/attache.yaml" <<EOF2
admin: {address: "127.0.0.1:$ADM"}
log: {level: warn}
listeners:
  - name: db
    address: "127.0.0.1:$AP"
    protocol: postgres
    cluster: pg
    postgres: {pool_mode: transaction, pool_size: 20, max_client_connections: 1000, auth: {users_file: "$work/run/users.txt"}}
clusters: [{name: pg, endpoints: ["127.0.0.1:$PGP"]}]
EOF2
GOMAXPROCS=1 bin/attache run --config "$work/attache.yaml" 2>"$work/attache.log" & APID=$!; pids+=($APID)
waitport "$BP"; waitport "$AP"
sleep 1

declare -A port=([direct]=$PGP [pgbouncer]=$BP [attache]=$AP)
declare -A pid=([pgbouncer]=$BPID [attache]=$APID)
targets=(direct pgbouncer attache)
res="$work/results"; : > "$res"
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    for script in select tpcb; do
      flag=""; [ "$script" = select ] && flag="-S"
      for tgt in "${targets[@]}"; do
        before=0; [ "$tgt" != direct ] && before=$(ticks "${pid[$tgt]}")
        out=$(pgbench -h 127.0.0.1 -p "${port[$tgt]}" -U postgres -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" -M "$mode" $flag -n postgres 2>&1 || true)
        after=0; [ "$tgt" != direct ] && after=$(ticks "${pid[$tgt]}")
        tps=$(echo "$out" | awk '/^tps/ {print $3; exit}')
        lat=$(echo "$out" | awk '/latency average/ {print $4; exit}')
        n=$(echo "$out" | awk '/number of transactions actually processed/ {print $NF; exit}' | cut -d/ -f1)
        if [ "${n:-0}" = 0 ]; then echo "$tgt $mode $script failed:"; echo "$out" | grep -m3 -i "error\|fatal" || echo "$out" | tail -3; fi
        echo "$tgt $mode $script ${tps:-0} ${lat:-0} $(awk -v d="$((after - before))" -v hz="$HZ" -v c="${n:-0}" 'BEGIN{ if (c>0) printf "%.1f", d/hz/c*1e6; else print 0 }')" >> "$res"
      done
    done
  done
  echo "round $round/$ROUNDS done" >&2
done
med() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
echo "pgbench, $CLIENTS clients, ${SECS}s runs, median of $ROUNDS interleaved rounds; poolers: transaction mode, pool 20, one thread"
printf "%-10s %-9s %-7s %10s %9s %11s %11s %12s\n" target mode script tps vs-direct latency-ms lat-vs-dir cpu-us/xact
for mode in simple prepared; do
  for script in select tpcb; do
    d=$(awk -v m="$mode" -v s="$script" '$1=="direct" && $2==m && $3==s {print $4}' "$res" | med)
    dl=$(awk -v m="$mode" -v s="$script" '$1=="direct" && $2==m && $3==s {print $5}' "$res" | med)
    for tgt in "${targets[@]}"; do
      r=$(awk -v g="$tgt" -v m="$mode" -v s="$script" '$1==g && $2==m && $3==s {print $4}' "$res" | med)
      l=$(awk -v g="$tgt" -v m="$mode" -v s="$script" '$1==g && $2==m && $3==s {print $5}' "$res" | med)
      c=$(awk -v g="$tgt" -v m="$mode" -v s="$script" '$1==g && $2==m && $3==s {print $6}' "$res" | med)
      [ "$tgt" = direct ] && c="-"
      printf "%-10s %-9s %-7s %10.0f %9.2f %11.2f %11.2f %12s\n" "$tgt" "$mode" "$script" "$r" \
        "$(awk -v r="$r" -v d="$d" 'BEGIN{ if (d>0) print r/d; else print 0 }')" "$l" \
        "$(awk -v r="$l" -v d="$dl" 'BEGIN{ if (d>0) print r/d; else print 0 }')" "$c"
    done
  done
done
echo "attache RSS: $(awk '/VmRSS/{print $2}' "/proc/$APID/status") KiB now, peak $(awk '/VmHWM/{print $2}' "/proc/$APID/status") KiB"
