#!/usr/bin/env bash
# bench/tcp.sh: redis-benchmark GET/SET, 50 clients, -P 1 and -P 16, against
# one private redis-server directly, through attache (tcp), through HAProxy
# (mode tcp) and through socat, interleaved round by round so that machine
# noise hits every target alike. Every proxy gets one thread (GOMAXPROCS=1,
# nbthread 1). Prints the median ops/s, the ratio to direct, each proxy's CPU
# time per operation (from /proc/PID/stat before and after each run,
# children included for socat's forks), and attache's idle and loaded RSS.
#
#   bench/tcp.sh                 # ROUNDS=5 REQUESTS=200000 by default
#   ROUNDS=3 REQUESTS=100000 bench/tcp.sh
#   ALT=/tmp/attache-old bench/tcp.sh   # and another build, as "alt"
#
# Needs redis-server, redis-benchmark, haproxy and socat (Debian packages
# redis-server, redis-tools, haproxy, socat); installs the missing ones
# with apt-get when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}

. bench/lib.sh
require redis-server:redis-server redis-benchmark:redis-tools haproxy:haproxy socat:socat

RP=$(freeport); AP=$(freeport); HP=$(freeport); SP=$(freeport); ADM=$(freeport)
redis-server --bind 127.0.0.1 --port "$RP" --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" & pids+=($!)
waitport "$RP"

make -s build >/dev/null
cat > "$work/attache.yaml" <<EOF
admin: {address: "127.0.0.1:$ADM"}
log: {level: warn}
listeners: [{name: redis, address: "127.0.0.1:$AP", cluster: redis}]
clusters: [{name: redis, endpoints: ["127.0.0.1:$RP"]}]
EOF
GOMAXPROCS=1 bin/attache run --config "$work/attache.yaml" 2>"$work/attache.log" & APID=$!; pids+=($APID)

cat > "$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen redis
  bind 127.0.0.1:$HP
  server r1 127.0.0.1:$RP
EOF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & HPID=$!; pids+=($HPID)
socat TCP-LISTEN:"$SP",fork,reuseaddr,bind=127.0.0.1 TCP:127.0.0.1:"$RP" & SPID=$!; pids+=($SPID)
waitport "$AP"; waitport "$HP"; waitport "$SP"
sleep 1
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
idle_rss=$(rss "$APID")


declare -A port=([direct]=$RP [attache]=$AP [haproxy]=$HP [socat]=$SP)
declare -A pid=([attache]=$APID [haproxy]=$HPID [socat]=$SPID)
targets=(direct attache haproxy socat)
# ALT=path/to/attache: another build as one more target (start_alt).
if [ -n "${ALT:-}" ]; then
  start_alt "$AP" "$ADM"
  port[alt]=$XP; pid[alt]=$XPID; targets+=(alt)
fi
res="$work/results"; : > "$res"

# The targets' order turns round by round: the same build run twice (an
# A/A test with ALT=) came out 10% apart at -P 1 in a fixed order.
for round in $(seq 1 "$ROUNDS"); do
  read -r -a order <<< "$(turn "$round" "${targets[@]}")"
  for P in 1 16; do
    n=$REQUESTS; [ "$P" = 16 ] && n=$((REQUESTS * 4))
    for tgt in "${order[@]}"; do
      before=0; [ "$tgt" != direct ] && before=$(ticks "${pid[$tgt]}")
      out=$(redis-benchmark -h 127.0.0.1 -p "${port[$tgt]}" -c "$CLIENTS" -n "$n" -P "$P" -t set,get --csv -q 2>/dev/null || true)
      after=0; [ "$tgt" != direct ] && after=$(ticks "${pid[$tgt]}")
      # "SET","123.45",... lines; CPU is split over both tests by request count
      echo "$out" | awk -F'","' -v t="$tgt" -v p="$P" -v n="$n" -v d="$((after - before))" -v hz="$HZ" '
        /^"(SET|GET)"/ { gsub(/"/, "", $1); gsub(/"/, "", $2); printf "%s P%s %s %s %.3f\n", t, p, $1, $2, (d / hz) / (2 * n) * 1e6 }' >> "$res"
    done
  done
  echo "round $round/$ROUNDS done" >&2
done
loaded_rss=$(awk '/VmHWM/{print $2}' "/proc/$APID/status")

echo
echo "redis-benchmark, $CLIENTS clients, median of $ROUNDS interleaved rounds; one thread per proxy"
printf "%-8s %-4s %-4s %12s %9s %12s\n" target P test ops/s vs-direct cpu-us/op
for P in 1 16; do
  for test in SET GET; do
    d=$(awk -v p="P$P" -v t="$test" '$1=="direct" && $2==p && $3==t {print $4}' "$res" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    for tgt in "${targets[@]}"; do
      awk -v g="$tgt" -v p="P$P" -v t="$test" '$1==g && $2==p && $3==t {print $4, $5}' "$res" | sort -n |
        awk -v g="$tgt" -v p="$P" -v t="$test" -v d="$d" '{r[NR]=$1; c[NR]=$2} END{
          m=r[int((NR+1)/2)]; n=asort(c); cm=c[int((n+1)/2)];
          if (g=="direct") cpu="-"; else cpu=sprintf("%.2f", cm);
          printf "%-8s %-4s %-4s %12.0f %9.2f %12s\n", g, p, t, m, m/d, cpu }'
    done
  done
done
echo
echo "attache RSS: idle $((idle_rss / 1024)) MiB ($idle_rss KiB), peak under load $((loaded_rss / 1024)) MiB ($loaded_rss KiB)"
