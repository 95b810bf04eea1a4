#!/usr/bin/env bash
# bench/redis.sh: redis-benchmark SET, GET and a 10-key MGET, 50 clients,
# -P 1 and -P 16: directly to one redis-server, through nutcracker and
# through attache sharding over three redis-servers, interleaved round by
# round. One thread each (GOMAXPROCS=1; nutcracker is single-threaded).
# Prints median ops/s, the ratio to direct and each proxy's CPU time per
# command (from /proc/PID/stat).
#
#   bench/redis.sh               # ROUNDS=3 REQUESTS=100000 by default
#   ALT=/tmp/attache-old bench/redis.sh   # and another build, as "alt"
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-100000}
. bench/lib.sh
require redis-server:redis-server redis-benchmark:redis-tools nutcracker:nutcracker

S0=$(freeport); S1=$(freeport); S2=$(freeport); NP=$(freeport); NS=$(freeport); AP=$(freeport); ADM=$(freeport)
for p in $S0 $S1 $S2; do
  redis-server --bind 127.0.0.1 --port "$p" --save "" --appendonly no --dir "$work" --logfile "$work/redis-$p.log" & pids+=($!)
done
for p in $S0 $S1 $S2; do waitport "$p"; done
cat > "$work/nutcracker.yml" <<EOF2
pool:
  listen: 127.0.0.1:$NP
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
   - 127.0.0.1:$S0:1
   - 127.0.0.1:$S1:1
   - 127.0.0.1:$S2:1
EOF2
nutcracker -c "$work/nutcracker.yml" -s "$NS" -o "$work/nutcracker.log" & NPID=$!; pids+=($NPID)
make -s build >/dev/null
cat > "$work/attache.yaml" <<EOF2
admin: {address: "127.0.0.1:$ADM"}
log: {level: warn}
listeners: [{name: cache, address: "127.0.0.1:$AP", protocol: redis, cluster: shards}]
clusters:
  - name: shards
    endpoints: ["127.0.0.1:$S0:1", "127.0.0.1:$S1:1", "127.0.0.1:$S2:1"]
    redis: {hash: fnv1a_64, distribution: ketama}
EOF2
GOMAXPROCS=1 bin/attache run --config "$work/attache.yaml" 2>"$work/attache.log" & APID=$!; pids+=($APID)
waitport "$NP"; waitport "$AP"
sleep 1

declare -A port=([direct]=$S0 [nutcracker]=$NP [attache]=$AP)
declare -A pid=([nutcracker]=$NPID [attache]=$APID)
targets=(direct nutcracker attache)
# ALT=path/to/attache: another build as one more target (start_alt).
if [ -n "${ALT:-}" ]; then start_alt "$AP" "$ADM"; port[alt]=$XP; pid[alt]=$XPID; targets+=(alt); fi
res="$work/results"; : > "$res"
mget="MGET"; for i in $(seq 1 10); do mget="$mget key:__rand_int__"; done
for round in $(seq 1 "$ROUNDS"); do
  for P in 1 16; do
    n=$REQUESTS; [ "$P" = 16 ] && n=$((REQUESTS * 4))
    for tgt in "${targets[@]}"; do
      for test in set get mget; do
        before=0; [ "$tgt" != direct ] && before=$(ticks "${pid[$tgt]}")
        if [ "$test" = mget ]; then
          out=$(redis-benchmark -h 127.0.0.1 -p "${port[$tgt]}" -c 50 -n "$((n / 4))" -P "$P" -r 100000 --csv -q $mget 2>/dev/null || true)
          cnt=$((n / 4))
        else
          out=$(redis-benchmark -h 127.0.0.1 -p "${port[$tgt]}" -c 50 -n "$n" -P "$P" -r 100000 -t "$test" --csv -q 2>/dev/null || true)
          cnt=$n
        fi
        after=0; [ "$tgt" != direct ] && after=$(ticks "${pid[$tgt]}")
        rps=$(echo "$out" | awk -F'","' 'NR==2 {gsub(/"/, "", $2); print $2}')
        echo "$tgt P$P $test ${rps:-0} $(awk -v d="$((after - before))" -v hz="$HZ" -v c="$cnt" 'BEGIN{printf "%.2f", d/hz/c*1e6}')" >> "$res"
      done
    done
  done
  echo "round $round/$ROUNDS done" >&2
done
med() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
echo "redis-benchmark, 50 clients, median of $ROUNDS interleaved rounds; direct = one shard, proxies over three"
printf "%-10s %-4s %-5s %12s %9s %12s\n" target P test ops/s vs-direct cpu-us/cmd
for P in 1 16; do
  for test in set get mget; do
    d=$(awk -v p="P$P" -v t="$test" '$1=="direct" && $2==p && $3==t {print $4}' "$res" | med)
    for tgt in "${targets[@]}"; do
      r=$(awk -v g="$tgt" -v p="P$P" -v t="$test" '$1==g && $2==p && $3==t {print $4}' "$res" | med)
      c=$(awk -v g="$tgt" -v p="P$P" -v t="$test" '$1==g && $2==p && $3==t {print $5}' "$res" | med)
      [ "$tgt" = direct ] && c="-"
      printf "%-10s %-4s %-5s %12.0f %9.2f %12s\n" "$tgt" "$P" "$test" "$r" "$(awk -v r="$r" -v d="$d" 'BEGIN{ if (d>0) print r/d; else print 0 }')" "$c"
    done
  done
done
echo "attache RSS: $(awk '/VmRSS/{print $2}' "/proc/$APID/status") KiB now, peak $(awk '/VmHWM/{print $2}' "/proc/$APID/status") KiB"
