#!/usr/bin/env bash
# bench/http.sh: wrk, 64 connections, a small and a 16 KiB response, against
# an nginx backend directly, through attache (protocol http), through nginx
# (proxy_pass with upstream keepalive) and through HAProxy (mode http),
# interleaved round by round. One thread per proxy (GOMAXPROCS=1,
# worker_processes 1, nbthread 1). Prints median requests/s, the ratio to
# direct, p50/p99 latency, each proxy's CPU time per request (from
# /proc/PID/stat) and attache's RSS.
#
#   bench/http.sh                  # ROUNDS=3 DURATION=5s by default
#   GOROUTINE=1 bench/http.sh      # also attache on the goroutine fast path
#                                  # alone (ATTACHE_EVENT_LOOPS=off), as att-gor
#   ALT=/tmp/attache-old bench/http.sh   # also another build, as alt
#   JWT=0 bench/http.sh           # without att-jwt: attache with a JWT check
#                                  # (RS256, jwt_providers) on every request
#   VERBOSE=1 bench/http.sh       # and every run's figures
#
# att-cache is attache with a response cache on its route (default_ttl
# 1h, so that both bodies are stored): every measured request is a cache
# hit, served on the net/http path, beside the plain route.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}

. bench/lib.sh
require wrk:wrk nginx:nginx-light haproxy:haproxy curl:curl

BP=$(freeport); AP=$(freeport); NP=$(freeport); HP=$(freeport); ADM=$(freeport); GP=$(freeport); GADM=$(freeport)
JP=$(freeport); JADM=$(freeport)
CP=$(freeport); CADM=$(freeport)
head -c 16384 /dev/urandom > "$work/big.bin"
# nginx's workers run as nobody when it starts as root: they must read
# big.bin (a 0700 work directory made /big a 403 page, logged per request).
chmod 755 "$work"
mkdir -p "$work/nb" "$work/np"
cat > "$work/backend.conf" <<EOF
worker_processes 1; daemon off; pid $work/nb/pid; error_log $work/backend.log;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $work/nb; proxy_temp_path $work/nb; fastcgi_temp_path $work/nb; uwsgi_temp_path $work/nb; scgi_temp_path $work/nb;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$BP; location = /small { return 200 "hello, attache\n"; } location = /big { alias $work/big.bin; } }
}
EOF
cat > "$work/proxy.conf" <<EOF
worker_processes 1; daemon off; pid $work/np/pid; error_log $work/nginx.log;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $work/np; proxy_temp_path $work/np; fastcgi_temp_path $work/np; uwsgi_temp_path $work/np; scgi_temp_path $work/np;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BP; keepalive 64; }
  server { listen 127.0.0.1:$NP; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
EOF
cat > "$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 1m
  timeout server 1m
  http-reuse always
listen web
  bind 127.0.0.1:$HP
  server b1 127.0.0.1:$BP
EOF
cat > "$work/attache.yaml" <<EOF
admin: {address: "127.0.0.1:$ADM"}
log: {level: warn}
listeners: [{name: web, address: "127.0.0.1:$AP", protocol: http, cluster: backend}]
clusters: [{name: backend, endpoints: ["127.0.0.1:$BP"], http: {max_idle_per_endpoint: 128}}]
EOF

sed -e "s/127.0.0.1:$ADM/127.0.0.1:$GADM/" -e "s/127.0.0.1:$AP/127.0.0.1:$GP/" "$work/attache.yaml" > "$work/attache-g.yaml"
# att-jwt: the same route with a JWT check (RS256, a key in a JWKS file),
# in a process of its own so that its CPU per request stands beside
# attache's; wrk sends a valid token with every request.
if [ "${JWT:-1}" = 1 ]; then
  TOKEN=$(go run ./bench/jwtgen "$work/jwks.json")
  cat > "$work/attache-jwt.yaml" <<EOF
admin: {address: "127.0.0.1:$JADM"}
log: {level: warn}
listeners:
  - name: web
    address: "127.0.0.1:$JP"
    protocol: http
    jwt_providers: [{name: bench, issuer: bench, audiences: [bench], jwks: {file: "$work/jwks.json"}}]
    routes: [{match: {prefix: /}, to: [{cluster: backend}], jwt: {provider: bench}}]
clusters: [{name: backend, endpoints: ["127.0.0.1:$BP"], http: {max_idle_per_endpoint: 128}}]
EOF
fi
cat > "$work/attache-c.yaml" <<EOF
admin: {address: "127.0.0.1:$CADM"}
log: {level: warn}
listeners:
  - {name: web, address: "127.0.0.1:$CP", protocol: http,
     routes: [{match: {prefix: /}, to: [{cluster: backend}], cache: {default_ttl: 1h}}]}
clusters: [{name: backend, endpoints: ["127.0.0.1:$BP"], http: {max_idle_per_endpoint: 128}}]
EOF

nginx -c "$work/backend.conf" 2>"$work/backend.log" & pids+=($!)
waitport "$BP"
make -s build >/dev/null
GOMAXPROCS=1 bin/attache run --config "$work/attache.yaml" 2>"$work/attache.log" & APID=$!; pids+=($APID)
GOMAXPROCS=1 bin/attache run --config "$work/attache-c.yaml" 2>"$work/attache-c.log" & CPID=$!; pids+=($CPID)
nginx -c "$work/proxy.conf" 2>"$work/nginx.log" & pids+=($!)
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & HPID=$!; pids+=($HPID)
if [ "${GOROUTINE:-}" = 1 ]; then
  ATTACHE_EVENT_LOOPS=off GOMAXPROCS=1 bin/attache run --config "$work/attache-g.yaml" 2>"$work/attache-g.log" & GPID=$!; pids+=($GPID)
  waitport "$GP"
fi
if [ "${JWT:-1}" = 1 ]; then
  GOMAXPROCS=1 bin/attache run --config "$work/attache-jwt.yaml" 2>"$work/attache-jwt.log" & JPID=$!; pids+=($JPID)
  waitport "$JP"
fi
# ALT=path/to/attache: another build as one more target (start_alt).
if [ -n "${ALT:-}" ]; then start_alt "$AP" "$ADM"; fi
waitport "$AP"; waitport "$NP"; waitport "$HP"; waitport "$CP"
sleep 1
NPID=$(pgrep -P "$(cat "$work/np/pid")" | head -1); [ -n "$NPID" ] || NPID=$(cat "$work/np/pid")
idle_rss=$(awk '/VmRSS/{print $2}' "/proc/$APID/status")

declare -A port=([direct]=$BP [attache]=$AP [nginx]=$NP [haproxy]=$HP [att-cache]=$CP)
declare -A pid=([attache]=$APID [nginx]=$NPID [haproxy]=$HPID [att-cache]=$CPID)
targets=(direct attache att-cache nginx haproxy)
if [ "${GOROUTINE:-}" = 1 ]; then port[att-gor]=$GP; pid[att-gor]=$GPID; targets+=(att-gor); fi
if [ -n "${ALT:-}" ]; then port[alt]=$XP; pid[alt]=$XPID; targets+=(alt); fi
if [ "${JWT:-1}" = 1 ]; then port[att-jwt]=$JP; pid[att-jwt]=$JPID; targets+=(att-jwt); fi
# hdr TARGET: wrk's and curl's extra header arguments for TARGET, a line each.
hdr() { if [ "$1" = att-jwt ]; then printf '%s\n' -H "Authorization: Bearer $TOKEN"; fi; }
# Every target must serve both bodies before anything is measured.
for tgt in "${targets[@]}"; do
  for path in small big; do
    mapfile -t h < <(hdr "$tgt")
    got=$(curl -s "${h[@]}" -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:${port[$tgt]}/$path")
    want="200 16384"; [ "$path" = small ] && want="200 15"
    [ "$got" = "$want" ] || { echo "bench: $tgt /$path answered \"$got\", want \"$want\"" >&2; exit 1; }
  done
done
# ... and att-cache has both stored: a second request is a hit.
for path in small big; do
  age=$(curl -s -o /dev/null -D - "http://127.0.0.1:$CP/$path" | tr -d '\r' | awk -F': ' 'tolower($1)=="age"{print $2}')
  [ -n "$age" ] || { echo "bench: att-cache /$path was not served from the cache (no Age)" >&2; exit 1; }
done
res="$work/results"; : > "$res"
toms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }

# The targets' order turns round by round, so that none is always the
# one run right after another's load.
for round in $(seq 1 "$ROUNDS"); do
  read -r -a order <<< "$(turn "$round" "${targets[@]}")"
  for path in small big; do
    for tgt in "${order[@]}"; do
      before=0; [ "$tgt" != direct ] && before=$(ticks "${pid[$tgt]}")
      mapfile -t h < <(hdr "$tgt")
      out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency "${h[@]}" "http://127.0.0.1:${port[$tgt]}/$path" 2>&1)
      after=0; [ "$tgt" != direct ] && after=$(ticks "${pid[$tgt]}")
      if echo "$out" | grep -q 'Non-2xx'; then echo "bench: $tgt /$path: $(echo "$out" | grep 'Non-2xx')" >&2; exit 1; fi
      rps=$(echo "$out" | awk '/^Requests\/sec/{print $2}')
      reqs=$(echo "$out" | awk '/requests in/{print $1}')
      p50=$(echo "$out" | awk '$1=="50%"{print $2}' | toms)
      p99=$(echo "$out" | awk '$1=="99%"{print $2}' | toms)
      cpu=$(awk -v d="$((after - before))" -v hz="$HZ" -v n="$reqs" 'BEGIN{ if (n>0) printf "%.2f", d/hz/n*1e6; else print 0 }')
      echo "$tgt $path $rps $p50 $p99 $cpu" >> "$res"
    done
  done
  echo "round $round/$ROUNDS done" >&2
done
loaded_rss=$(awk '/VmHWM/{print $2}' "/proc/$APID/status")
if [ -n "${VERBOSE:-}" ]; then echo "every run (target body req/s p50-ms p99-ms cpu-us/req):"; cat "$res"; fi

med() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
echo "wrk -t2 -c$CONNS -d$DURATION, median of $ROUNDS interleaved rounds; one thread per proxy"
printf "%-8s %-6s %10s %9s %9s %9s %12s %14s\n" target body req/s vs-direct p50-ms p99-ms cpu-us/req cpu-min..max
for path in small big; do
  d=$(awk -v p="$path" '$1=="direct" && $2==p {print $3}' "$res" | med)
  for tgt in "${targets[@]}"; do
    r=$(awk -v g="$tgt" -v p="$path" '$1==g && $2==p {print $3}' "$res" | med)
    p50=$(awk -v g="$tgt" -v p="$path" '$1==g && $2==p {print $4}' "$res" | med)
    p99=$(awk -v g="$tgt" -v p="$path" '$1==g && $2==p {print $5}' "$res" | med)
    cpu=$(awk -v g="$tgt" -v p="$path" '$1==g && $2==p {print $6}' "$res" | med)
    spread=$(awk -v g="$tgt" -v p="$path" '$1==g && $2==p {print $6}' "$res" | sort -n | awk '{a[NR]=$1} END{print a[1] ".." a[NR]}')
    [ "$tgt" = direct ] && cpu="-" && spread="-"
    printf "%-8s %-6s %10.0f %9.2f %9s %9s %12s %14s\n" "$tgt" "$path" "$r" "$(awk -v r="$r" -v d="$d" 'BEGIN{print r/d}')" "$p50" "$p99" "$cpu" "$spread"
  done
done
echo
echo "attache RSS: idle $((idle_rss / 1024)) MiB ($idle_rss KiB), peak under load $((loaded_rss / 1024)) MiB ($loaded_rss KiB)"
