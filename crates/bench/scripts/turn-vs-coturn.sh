#!/usr/bin/env bash
# TURN relay efficiency: onair's embedded TURN and coturn (Debian's turnserver) under the same
# turnutils_uclient load, one after the other, each on a fresh process. For each number of
# allocations (clients) and payload size, every client sends at a fixed interval to
# turnutils_peer, which echoes; every echoed message crosses the server twice (client → peer
# and peer → client). Reported: relayed packets per CPU-second of the server (its utime+stime
# from /proc over the run), loss as uclient counts it, and the load generator's own CPU.
#
# Usage (as root, inside the loopback-only namespace):
#   ../shared/tools/netns-run crates/bench/scripts/turn-vs-coturn.sh target/release/onair [ALLOCS] [SIZES] [SECS]
# Defaults: ALLOCS=1,100,1000 SIZES=120,1200 SECS=10. Needs coturn (apt-get install coturn).
set -uo pipefail
BIN=$(realpath "${1:?usage: turn-vs-coturn.sh ONAIR_BIN [ALLOCS] [SIZES] [SECS]}")
IFS=, read -ra ALLOCS <<<"${2:-1,100,1000}"
IFS=, read -ra SIZES <<<"${3:-120,1200}"
SECS=${4:-10}
HZ=$(getconf CLK_TCK)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
ip -o addr show | grep -qv ' lo ' && { echo "run inside ../shared/tools/netns-run" >&2; exit 2; }
WORK=$(mktemp -d /tmp/turn-bench.XXXXXX)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

turnutils_peer -L 127.0.0.1 -p 3480 >/dev/null 2>&1 &
PEER=$!
SERVER=
trap 'kill $PEER $SERVER 2>/dev/null' EXIT

start() { # onair|coturn
  case $1 in
    onair)
      ONAIR_TURN_USERS='["alice:wonderland"]' ONAIR_TURN_ALLOW_LOOPBACK_PEERS=true \
      ONAIR_TURN_MAX_ALLOCATIONS_PER_USER=100000 ONAIR_TURN_MAX_ALLOCATIONS=100000 \
      ONAIR_TURN_ALLOCATION_KBPS=0 ONAIR_HTTP_LISTEN=127.0.0.1:18080 ONAIR_RTMP_ENABLED=false \
      RUST_LOG=warn,stun_proto=off "$BIN" >"$WORK/onair.log" 2>&1 &
      SERVER=$! ;;
    coturn)
      turnserver -n --listening-ip=127.0.0.1 --listening-port=3478 --relay-ip=127.0.0.1 \
        --min-port=49152 --max-port=65535 --allow-loopback-peers --lt-cred-mech \
        --user=alice:wonderland --realm=onair --no-tls --no-dtls --no-cli \
        --log-file="$WORK/coturn.log" --simple-log >/dev/null 2>&1 &
      SERVER=$! ;;
  esac
  for _ in $(seq 50); do
    ss -lun | grep -q '127.0.0.1:3478 ' && { sleep 0.3; return 0; }
    sleep 0.1
  done
  echo "$1 did not answer STUN" >&2; return 1
}
stop() { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; SERVER=; }

printf '%-7s %6s %6s %10s %9s %8s %12s %9s %8s\n' server allocs bytes sent echoed loss% "pkts/CPU-s" "server%" "gen%"
declare -A RATE
for n in "${ALLOCS[@]}"; do
  # Rate per client: 1000/s alone, 200/s at 100, 50/s (a 20 ms audio stream) at 1000.
  if [ "$n" -le 1 ]; then z=1; elif [ "$n" -le 100 ]; then z=5; else z=20; fi
  msgs=$((SECS * 1000 / z))
  for size in "${SIZES[@]}"; do
    for server in onair coturn; do
      start $server || continue
      t0=$(cpu_ticks "$SERVER"); s0=$(date +%s.%N)
      # One uclient process drives at most 250 clients (with more, its own allocations time
      # out and it loops on 437 against either server); larger counts run several at once.
      rm -f "$WORK"/uclient.*.out "$WORK"/gen.*.time
      left=$n; k=0
      while [ "$left" -gt 0 ]; do
        m=$((left > 250 ? 250 : left)); left=$((left - m)); k=$((k + 1))
        /usr/bin/time -f '%U %S' -o "$WORK/gen.$k.time" \
          timeout $((SECS * 6 + 60)) turnutils_uclient -c -u alice -w wonderland -L 127.0.0.1 -e 127.0.0.1 \
          -r 3480 -m "$m" -n "$msgs" -l "$size" -z "$z" 127.0.0.1 >"$WORK/uclient.$k.out" 2>&1 &
      done
      wait $(jobs -p | grep -v "^$PEER\$" | grep -v "^$SERVER\$") 2>/dev/null
      t1=$(cpu_ticks "$SERVER"); s1=$(date +%s.%N)
      stop
      sent=0; recv=0; gu=0; gs=0
      for f in "$WORK"/uclient.*.out; do
        sent=$((sent + $(grep -o 'tot_send_msgs=[0-9]*' "$f" | tail -1 | cut -d= -f2 | grep . || echo 0)))
        recv=$((recv + $(grep -o 'tot_recv_msgs=[0-9]*' "$f" | tail -1 | cut -d= -f2 | grep . || echo 0)))
      done
      read -r gu gs < <(cat "$WORK"/gen.*.time 2>/dev/null | awk '/^[0-9.]+ [0-9.]+$/ {u += $1; s += $2} END {printf "%.2f %.2f\n", u, s}')
      python3 - "$server" "$n" "$size" "${sent:-0}" "${recv:-0}" "$t0" "$t1" "$HZ" "$s0" "$s1" "$gu" "$gs" <<'PY' | tee -a "$WORK/rows"
import sys
server, n, size, sent, recv, t0, t1, hz, s0, s1, gu, gs = sys.argv[1:]
sent, recv = int(sent), int(recv)
cpu = (int(t1) - int(t0)) / int(hz)
wall = float(s1) - float(s0)
relayed = 2 * recv
loss = 100.0 * (sent - recv) / sent if sent else 100.0
rate = relayed / cpu if cpu > 0 else float('nan')
print(f"{server:<7} {n:>6} {size:>6} {sent:>10} {recv:>9} {loss:>8.2f} {rate:>12.0f} {100*cpu/wall:>8.1f} {100*(float(gu)+float(gs))/wall:>8.1f}")
PY
    done
  done
done
echo
echo "onair / coturn, relayed packets per CPU-second:"
awk '{k=$2" "$3; if ($1=="onair") o[k]=$7; else c[k]=$7} END {for (k in o) if (c[k] > 0) printf "  %s allocations, %s bytes: %.2fx\n", substr(k,1,index(k," ")-1), substr(k,index(k," ")+1), o[k]/c[k]}' "$WORK/rows" | sort -n -k1
echo "(raw output in $WORK)"
