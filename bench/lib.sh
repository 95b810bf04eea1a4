# Shared by the bench/ scripts: sourced, not run.

# require CMD:PACKAGE...: installs the Debian packages of missing commands
# (as root), or stops with what to install.
require() {
  local need=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}"); done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else echo "bench: missing ${need[*]} (apt-get install them)"; exit 1; fi
}

# A work directory and the PIDs to stop (by PID) on exit.
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# freeport: a free loopback port, never one an earlier call of this run
# returned (the kernel hands a just-closed port out again, and two
# listeners of one run got the same one).
freeport() {
  local p _
  for _ in $(seq 1 50); do
    p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
      shuf -i 20000-40000 -n 1)
    grep -qx "$p" "$work/ports" 2>/dev/null || { echo "$p" >> "$work/ports"; echo "$p"; return 0; }
  done
  echo "bench: no free port" >&2; return 1
}
waitport() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; cat "$work"/*.log; exit 1; }

# ticks PID: CPU time of a process and its reaped children, in clock ticks.
ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }
# uticks PID: the user-mode part of ticks.
uticks() { awk '{print $14+$16}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# turn ROUND NAME...: the names in the order of round ROUND (from 1), each
# round starting one further along, so that no target is always the one
# run right after another's load. Names must not hold blanks.
turn() {
  local k=$(( ($1 - 1) % ($# - 1) )); shift
  echo "${@:$((k + 1))}" "${@:1:$k}"
}

# start_alt PORT ADMIN_PORT: starts the build named by ALT as one more
# target, "alt" (an A/B test of a change in one run: build the other into
# a file outside bin/), with $work/attache.yaml's listener PORT and admin
# ADMIN_PORT moved to free ones, at GOMAXPROCS=$ALT_PROCS, else $PROCS
# (the script's, 1 unless it sets one); sets XP (its listener) and XPID.
start_alt() {
  XP=$(freeport); local xadm; xadm=$(freeport)
  sed -e "s/127.0.0.1:$1/127.0.0.1:$XP/" -e "s/127.0.0.1:$2/127.0.0.1:$xadm/" "$work/attache.yaml" > "$work/alt.yaml"
  GOMAXPROCS=${ALT_PROCS:-${PROCS:-1}} "$ALT" run --config "$work/alt.yaml" 2>"$work/alt.log" & XPID=$!; pids+=($XPID)
  waitport "$XP"
}
