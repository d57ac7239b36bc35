#!/usr/bin/env bash
# coturn's own clients against onair's STUN/TURN, inside a loopback-only namespace:
#   turnutils_stunclient gets a reflexive address;
#   turnutils_uclient relays 10 clients × 100 messages to turnutils_peer over UDP, TCP and TLS
#   (a certificate from files made here with openssl), with a static user and with coturn-style
#   time-limited (REST) credentials, and over IPv6 (an IPv6 client, and an IPv6 relay asked for
#   by an IPv4 client); 0 loss expected;
#   with the default config, a relay toward 127.0.0.1 is refused (403) and counted.
# Usage: ONAIR_BIN=target/debug/onair ../shared/tools/netns-run tests/turn/turnutils.sh
set -uo pipefail
BIN=${ONAIR_BIN:-target/debug/onair}
LOG=$(mktemp /tmp/onair-turnutils.XXXXXX)
fail=0
pass=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "not ok - $*"; fail=$((fail + 1)); }
for tool in turnutils_uclient turnutils_peer turnutils_stunclient openssl; do
  command -v $tool >/dev/null || { echo "error: $tool missing (apt-get install coturn)" >&2; exit 2; }
done
ip -o addr show | grep -qv ' lo ' && [ "${ONAIR_E2E_ALLOW_HOST_NET:-}" != 1 ] && {
  echo "error: run inside ../shared/tools/netns-run (only lo may exist)" >&2; exit 2; }

start() { # env assignments...
  env "$@" ONAIR_HTTP_LISTEN=127.0.0.1:18080 ONAIR_RTMP_LISTEN=127.0.0.1:0 "$BIN" >>"$LOG" 2>&1 &
  SERVER=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && return; sleep 0.1; done
  echo "error: onair did not start; log $LOG" >&2; tail -20 "$LOG" >&2; exit 1
}
stop() { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; }
metric() { curl -s http://127.0.0.1:18080/metrics | awk -v m="$1" '$1 == m {print $2}'; }

turnutils_peer -L 127.0.0.1 -p 3480 >/dev/null 2>&1 &
PEER=$!
turnutils_peer -L ::1 -p 3480 >/dev/null 2>&1 &
PEER6=$!
trap 'kill $PEER $PEER6 2>/dev/null; stop' EXIT

CERT=$(mktemp -d /tmp/onair-turn-tls.XXXXXX)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -keyout "$CERT/key.pem" -out "$CERT/cert.pem" 2>/dev/null \
  || { echo "error: openssl could not make a certificate" >&2; exit 2; }
start ONAIR_TURN_USERS='["alice:wonderland"]' ONAIR_TURN_SECRET=s3cret ONAIR_TURN_ALLOW_LOOPBACK_PEERS=true \
  ONAIR_TURN_TLS_CERT="$CERT/cert.pem" ONAIR_TURN_TLS_KEY="$CERT/key.pem" ONAIR_TURN_BIND_V6=::1

out=$(timeout 20 turnutils_stunclient -p 3478 127.0.0.1 2>&1)
if grep -q "UDP reflexive addr: 127.0.0.1:" <<<"$out"; then
  ok "turnutils_stunclient: $(grep -m1 -o 'UDP reflexive addr: [0-9.:]*' <<<"$out")"
else
  bad "turnutils_stunclient got no reflexive address: $out"
fi

uclient() { # name, extra args... (ONAIR_IP: the address family's loopback)
  local name=$1; shift
  local out ip=${ONAIR_IP:-127.0.0.1}
  out=$(timeout 90 turnutils_uclient "$@" -L "$ip" -e "${PEER_IP:-$ip}" -r 3480 -m 10 -n 100 -l 120 "$ip" 2>&1)
  local sent recv lost
  sent=$(grep -o 'tot_send_msgs=[0-9]*' <<<"$out" | tail -1 | cut -d= -f2)
  recv=$(grep -o 'tot_recv_msgs=[0-9]*' <<<"$out" | tail -1 | cut -d= -f2)
  lost=$(grep -o 'Total lost packets [0-9]*' <<<"$out" | tail -1 | awk '{print $4}')
  if [ "${sent:-0}" = 1000 ] && [ "${recv:-0}" = 1000 ] && [ "${lost:-x}" = 0 ]; then
    ok "turnutils_uclient $name: 10 clients × 100 messages of 120 bytes, sent $sent, received $recv, lost $lost"
  else
    bad "turnutils_uclient $name: sent ${sent:-?} received ${recv:-?} lost ${lost:-?}: $(grep -i error <<<"$out" | head -3)"
  fi
}
uclient "UDP, static user" -u alice -w wonderland
uclient "TCP, static user" -t -u alice -w wonderland
uclient "UDP, REST credentials" -u carol -W s3cret
uclient "TCP, REST credentials" -t -u carol -W s3cret
uclient "TLS, static user" -t -S -p 5349 -u alice -w wonderland
uclient "TLS, REST credentials" -t -S -p 5349 -u carol -W s3cret
# -c: one allocation per client. Without it uclient pairs an RTCP allocation (EVEN-PORT and
# RESERVATION-TOKEN) with the first, which turn-server-proto gives an IPv4 relay, and uclient
# then refuses it for not being of the family it asked for.
ONAIR_IP=::1 uclient "UDP over IPv6" -c -u alice -w wonderland
ONAIR_IP=::1 uclient "TCP over IPv6" -c -t -u alice -w wonderland
PEER_IP=::1 uclient "IPv4 client, IPv6 relay (REQUESTED-ADDRESS-FAMILY)" -c -x -u alice -w wonderland
sleep 1.2 # counters reach /metrics once a second
allocs=$(metric onair_turn_allocations_total)
relayed=$(metric onair_turn_to_peer_packets_total)
[ "${allocs:-0}" -ge 80 ] && [ "${relayed:-0}" -ge 9000 ] \
  && ok "metrics: $allocs allocations, $relayed packets to peers, $(metric onair_turn_to_client_packets_total) back" \
  || bad "metrics: allocations ${allocs:-?}, relayed ${relayed:-?}"
stop

# Default config: loopback peers are refused.
start ONAIR_TURN_USERS='["alice:wonderland"]'
out=$(timeout 30 turnutils_uclient -u alice -w wonderland -L 127.0.0.1 -e 127.0.0.1 -r 3480 -m 1 -n 5 -l 120 127.0.0.1 2>&1)
sleep 1.2
refused=$(curl -s http://127.0.0.1:18080/metrics | awk '$1 == "onair_turn_refusals_total{reason=\"loopback\"}" {print $2}')
if [ "${refused:-0}" -ge 1 ] && grep -q "error 403" <<<"$out"; then
  ok "default config: a relay toward 127.0.0.1 gets 403 ($refused refusals counted)"
else
  bad "default config: refusals ${refused:-0}, client said: $(grep -i 'error\|403' <<<"$out" | head -3)"
fi
stop

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
