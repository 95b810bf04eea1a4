#!/usr/bin/env bash
# bench/pg.sh: pgbench select-only (-S) and the default TPC-B-like script,
# 100 clients, in the protocol modes -M simple, extended and prepared,
# against one private PostgreSQL directly, through pgbouncer (transaction
# mode, pool 20, one process) and through attache (protocol: postgres,
# transaction mode, pool 20, GOMAXPROCS=2: one engine, whose loop waits on
# a thread of its own while busy, and a processor for everything else;
# docs/postgres.md), interleaved round by round so that machine noise hits
# every target alike. Clients authenticate with
# SCRAM-SHA-256 everywhere, and the poolers log into the server with it.
# Prints the median TPS, its ratio to direct, the median average latency and
# each pooler's CPU time per transaction (from /proc/PID/stat, over the
# run after its 100 clients have logged in), with its user-mode part: the
# rest is the kernel's, mostly the loopback TCP work of send.
#
#   bench/pg.sh                  # ROUNDS=3 DURATION=15 SCALE=10 by default
#   ROUNDS=5 DURATION=20 MODES="simple extended" bench/pg.sh
#   TESTS=tpcb MODES=extended bench/pg.sh      # one row
#   VERBOSE=1 bench/pg.sh                      # and every run's figures
#   RATE=1500 TESTS=tpcb bench/pg.sh           # at a fixed rate (pgbench -R)
#
# At a fixed rate below what every target reaches, the targets do the
# same work at the same pace, so their CPU per transaction compares their
# cost per transaction alone; at full speed it also follows how many
# events each wake-up finds, which moves with the TPS of the run.
#   ALT=/tmp/attache-old bench/pg.sh           # and another build, as "alt"
#   ALT=... ALT_PROCS=1 bench/pg.sh            # at another GOMAXPROCS
#
# -M extended sends Parse/Bind/Execute with the unnamed statement: every
# pooler in transaction mode handles it. -M prepared uses named
# statements, which a transaction pooler must track and re-prepare on
# whichever server connection the client gets; pgbouncer does that only
# from 1.21 (max_prepared_statements), so with an older pgbouncer its
# prepared rows are skipped. The attache rows are skipped, with the
# reason, while `attache validate` rejects the postgres listener.
#
# Needs PostgreSQL server binaries (initdb, postgres, pgbench: Debian package
# postgresql) and pgbouncer; installs the missing ones with apt-get as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-100}
POOL=${POOL:-20}
MODES=${MODES:-simple extended prepared}
TESTS=${TESTS:-select tpcb}
PROCS=${PROCS:-2} # attache's GOMAXPROCS (and ALT's): one engine at 2

. bench/lib.sh
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -1)
[ -x "$pgbin/initdb" ] || { require initdb:postgresql; pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k5 -n | tail -1); }
require pgbouncer:pgbouncer

# PostgreSQL and pgbouncer refuse to run as root: run them as postgres.
asuser=()
if [ "$(id -u)" = 0 ]; then
  asuser=(setpriv --reuid=postgres --regid=postgres --init-groups)
  chown postgres: "$work"; chmod 755 "$work"
fi

PGP=$(freeport); BP=$(freeport); AP=$(freeport); ADM=$(freeport)
export PGPASSWORD="bench-$RANDOM$RANDOM"
echo "$PGPASSWORD" > "$work/pw"
"${asuser[@]}" "$pgbin/initdb" -D "$work/data" -U postgres --pwfile "$work/pw" --auth-host=scram-sha-256 \
  --auth-local=trust -E UTF8 --locale=C --no-sync >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log"; exit 1; }
"${asuser[@]}" "$pgbin/postgres" -D "$work/data" -p "$PGP" -k "$work" -c listen_addresses=127.0.0.1 \
  -c max_connections=$((CLIENTS + 2 * POOL + 20)) -c shared_buffers=128MB -c fsync=off -c synchronous_commit=off \
  -c full_page_writes=off >"$work/postgres.log" 2>&1 & PGPID=$!; pids+=($PGPID)
waitport "$PGP"
for _ in $(seq 1 100); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$PGP" && break; sleep 0.1; done
psql() { "$pgbin/psql" -X -q -h 127.0.0.1 -p "$PGP" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE bench"
echo "pgbench -i -s $SCALE ..." >&2
"$pgbin/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGP" -U postgres bench >"$work/init.log" 2>&1 || { cat "$work/init.log"; exit 1; }

# pgbouncer, as the Debian package ships it.
bver=$(pgbouncer --version | awk 'NR==1 {print $2}')
newer() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; } # newer A B: A >= B
printf '"postgres" "%s"\n' "$PGPASSWORD" > "$work/users.txt"
cat > "$work/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PGP dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BP
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = $((CLIENTS + 50))
logfile = $work/pgbouncer.log
EOF
bouncer_prepared=no
if newer "$bver" 1.21; then echo "max_prepared_statements = 200" >> "$work/pgbouncer.ini"; bouncer_prepared=yes; fi
chmod 644 "$work"/users.txt "$work"/pgbouncer.ini
"${asuser[@]}" pgbouncer "$work/pgbouncer.ini" >"$work/pgbouncer.out" 2>&1 & BPID=$!; pids+=($BPID)
waitport "$BP"

# attache, when this build knows the postgres listener.
make -s build >/dev/null
cat > "$work/attache.yaml" <<EOF
admin: {address: "127.0.0.1:$ADM"}
log: {level: warn}
listeners:
  - name: bench
    address: 127.0.0.1:$AP
    protocol: postgres
    cluster: pg
    postgres:
      pool_mode: transaction
      pool_size: $POOL
      max_client_connections: $((CLIENTS + 50))
      auth: {users_file: $work/users.txt}
clusters: [{name: pg, endpoints: ["127.0.0.1:$PGP"]}]
EOF
targets=(direct pgbouncer)
declare -A port=([direct]=$PGP [pgbouncer]=$BP [attache]=$AP)
declare -A pid=([pgbouncer]=$BPID)
if bin/attache validate --config "$work/attache.yaml" >"$work/validate.log" 2>&1; then
  GOMAXPROCS=$PROCS bin/attache run --config "$work/attache.yaml" 2>"$work/attache.log" & APID=$!; pids+=($APID)
  waitport "$AP"
  pid[attache]=$APID; targets+=(attache)
else
  echo "bench: skipping attache: its configuration with a postgres listener is rejected:" >&2
  sed 's/^/  /' "$work/validate.log" >&2
fi
# ALT=path/to/attache: another build as one more target (start_alt).
if [ -n "${ALT:-}" ]; then
  start_alt "$AP" "$ADM"
  port[alt]=$XP; pid[alt]=$XPID; targets+=(alt)
fi
sleep 1

# run TARGET TEST MODE: one pgbench run; appends "target test mode tps lat cpu"
# to $res. TPS and latency are pgbench's (they leave out the connection
# phase, which -T counts: 2-4 s of 100 SCRAM logins here). The CPU time per
# transaction leaves it out too, since those logins cost a pooler more than
# seconds of traffic: the pooler's ticks are read at each 1 s progress
# report, and the CPU between the second and the last report is divided by
# the transactions those reports count.
# One pgbench thread per client: with -M prepared, PQprepare blocks its
# thread, so several clients per thread deadlock behind a transaction
# pooler whose servers are all held by clients of a blocked thread.
res="$work/results"; : > "$res"
run() {
  local tgt=$1 test=$2 mode=$3 flags=()
  [ "$test" = select ] && flags+=(-S)
  [ -n "${RATE:-}" ] && flags+=(-R "$RATE")
  : > "$work/out"; : > "$work/ticks"
  { "$pgbin/pgbench" -h 127.0.0.1 -p "${port[$tgt]}" -U postgres -n -c "$CLIENTS" -j "$CLIENTS" -T "$DURATION" -P 1 \
      -M "$mode" "${flags[@]}" bench 2>&1 || true; } |
    while IFS= read -r line; do
      echo "$line" >> "$work/out"
      case $line in
        progress:*) if [ "$tgt" = direct ]; then echo 0 0; else echo "$(ticks "${pid[$tgt]}") $(uticks "${pid[$tgt]}")"; fi >> "$work/ticks" ;;
      esac
    done
  awk -v t="$tgt" -v s="$test" -v m="$mode" -v hz="$HZ" '
    FNR == NR { tk[++k] = $1; uk[k] = $2; next }
    /^progress:/ { if (++p > 2) win += $4 }
    /latency average/ { lat = $4 }
    /^tps/ { tps = $3 }
    END { ok = win > 0 && p >= 3
          cpu = ok ? (tk[p] - tk[2]) / hz / win * 1e6 : 0; usr = ok ? (uk[p] - uk[2]) / hz / win * 1e6 : 0
          printf "%s %s %s %.0f %.3f %.1f %.1f\n", t, s, m, tps, lat, cpu, usr }' "$work/ticks" "$work/out" >> "$res"
  if ! grep -q "^tps" "$work/out"; then
    echo "bench: pgbench through $tgt ($test, -M $mode) failed: $(grep -v '^progress' "$work/out" | tail -2 | tr '\n' ' ')" >&2
  fi
}

# The targets' order turns round by round, and every TPC-B run starts from
# the tables as pgbench itself leaves them before a run (its vacuum, which
# -n skips, done directly): else the last target of every round would meet
# the most dead rows, and TPC-B's TPS falls with them.
for round in $(seq 1 "$ROUNDS"); do
  read -r -a order <<< "$(turn "$round" "${targets[@]}")"
  for test in $TESTS; do
    for mode in $MODES; do
      for tgt in "${order[@]}"; do
        [ "$tgt" = pgbouncer ] && [ "$mode" = prepared ] && [ "$bouncer_prepared" = no ] && continue
        [ "$test" = tpcb ] && psql -d bench -c "VACUUM pgbench_branches" -c "VACUUM pgbench_tellers" -c "TRUNCATE pgbench_history"
        run "$tgt" "$test" "$mode"
      done
    done
  done
  echo "round $round/$ROUNDS done" >&2
done

if [ -n "${VERBOSE:-}" ]; then echo "every run (target test mode tps lat-ms cpu-us/tx user-part):"; cat "$res"; fi
med() { sort -n | awk '{a[NR]=$1} END{ if (NR) print a[int((NR+1)/2)]; else print 0 }'; }
col() { awk -v g="$1" -v s="$2" -v m="$3" -v c="$4" '$1==g && $2==s && $3==m {print $c}' "$res" | med; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "pgbench, $CLIENTS clients${RATE:+ at $RATE transactions/s}, scale $SCALE, ${DURATION}s runs, median of $ROUNDS interleaved rounds; poolers: transaction mode, pool $POOL, one thread (attache: one engine, GOMAXPROCS=$PROCS)"
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), pgbouncer $bver"
[ "$bouncer_prepared" = no ] && echo "(pgbouncer $bver has no max_prepared_statements: its -M prepared rows are skipped)"
printf "%-7s %-9s %-9s %9s %9s %12s %8s %10s %9s\n" test mode target tps vs-direct vs-pgbouncer lat-ms cpu-us/tx user-part
for test in $TESTS; do
  for mode in $MODES; do
    d=$(col direct "$test" "$mode" 4); b=$(col pgbouncer "$test" "$mode" 4)
    for tgt in "${targets[@]}"; do
      grep -q "^$tgt $test $mode " "$res" || continue
      t=$(col "$tgt" "$test" "$mode" 4); l=$(col "$tgt" "$test" "$mode" 5); c=$(col "$tgt" "$test" "$mode" 6); u=$(col "$tgt" "$test" "$mode" 7)
      vb=-; case $tgt in attache|alt) vb=$(ratio "$t" "$b") ;; esac
      [ "$tgt" = direct ] && c=- && u=-
      printf "%-7s %-9s %-9s %9.0f %9s %12s %8s %10s %9s\n" "$test" "$mode" "$tgt" "$t" "$(ratio "$t" "$d")" "$vb" "$l" "$c" "$u"
    done
  done
done
if [ -n "${pid[attache]:-}" ]; then
  echo "attache RSS: $(awk '/VmRSS/{print $2}' "/proc/${pid[attache]}/status") KiB now, peak $(awk '/VmHWM/{print $2}' "/proc/${pid[attache]}/status") KiB"
fi
