#!/usr/bin/env bash
# bench/rss.sh: idle memory of attache built like `make build`: one http
# listener, one cluster and the admin endpoint on free loopback ports, 2 s
# after start (one thread, GOMAXPROCS=1, as bench/http.sh runs it). Prints,
# per run and as medians, VmRSS, RssAnon and RssFile from /proc/PID/status
# and the stripped binary's size. The process is stopped by PID.
#
#   bench/rss.sh                          # RUNS=5 by default
#   BUILD=0 BIN=/tmp/attache bench/rss.sh  # measure a binary as it is
#   GOMAXPROCS=2 bench/rss.sh             # as many Ps as the machine's CPUs
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
BIN=${BIN:-bin/attache}
PROCS=${GOMAXPROCS:-1}

. bench/lib.sh

[ "${BUILD:-1}" = 0 ] || make -s build BIN="$BIN" >/dev/null
AP=$(freeport); BP=$(freeport); ADM=$(freeport)
cat > "$work/attache.yaml" <<EOC
admin: {address: "127.0.0.1:$ADM"}
log: {level: warn}
listeners: [{name: web, address: "127.0.0.1:$AP", protocol: http, cluster: backend}]
clusters: [{name: backend, endpoints: ["127.0.0.1:$BP"]}]
EOC

field() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$2/status"; }
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for i in $(seq 1 "$RUNS"); do
  GOMAXPROCS=$PROCS "$BIN" run --config "$work/attache.yaml" 2>"$work/attache.log" & APID=$!; pids+=($APID)
  waitport "$AP"; waitport "$ADM"
  sleep 2
  echo "$(field VmRSS $APID) $(field RssAnon $APID) $(field RssFile $APID)" >> "$work/rss"
  kill "$APID"; wait "$APID" 2>/dev/null || true; pids=()
done
size=$(stat -c %s "$BIN")
echo "binary: $size bytes ($((size / 1024)) KiB), GOMAXPROCS=$PROCS, load: $(cut -d' ' -f1-3 /proc/loadavg)"
awk '{printf "run %d: VmRSS %d KiB, RssAnon %d KiB, RssFile %d KiB\n", NR, $1, $2, $3}' "$work/rss"
echo "median: VmRSS $(cut -d' ' -f1 "$work/rss" | median) KiB, RssAnon $(cut -d' ' -f2 "$work/rss" | median) KiB, RssFile $(cut -d' ' -f3 "$work/rss" | median) KiB"
