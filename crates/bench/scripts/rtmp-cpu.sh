#!/usr/bin/env bash
# CPU cost of RTMP ingest in onair, with and without the AAC → Opus transcode, for N
# publishers sending a pre-encoded 720p30 H.264 + AAC file with `-c copy` (so FFmpeg does no
# encoding). Server CPU comes from /proc/PID/stat over a fixed window. Bounded: two runs of
# SECONDS each. Run inside the loopback-only namespace:
#   ../shared/tools/netns-run crates/bench/scripts/rtmp-cpu.sh target/release/onair [N] [SECONDS]
set -euo pipefail
BIN=${1:?usage: rtmp-cpu.sh PATH_TO_ONAIR [N] [SECONDS]}
N=${2:-4}
SECS=${3:-20}
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
ip link set lo up 2>/dev/null || true

# 10 s of 720p30 H.264 (baseline, 2.5 Mbit/s) + 48 kHz stereo AAC, made once.
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -ac 2 -t 10 \
  -c:v libx264 -preset veryfast -profile:v baseline -pix_fmt yuv420p -g 60 -b:v 2500k \
  -c:a aac -b:a 128k -ar 48000 -f flv "$TMP/src.flv"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

run() { # $1 = transcode true|false
  ONAIR_HTTP_LISTEN=127.0.0.1:18080 ONAIR_MEDIA_PORT=18500 ONAIR_RTMP_LISTEN=127.0.0.1:11935 \
    ONAIR_RTMP_TRANSCODE_AUDIO=$1 RUST_LOG=warn "$BIN" >"$TMP/onair.log" 2>&1 &
  local srv=$!
  sleep 0.5
  local pubs=()
  for i in $(seq 1 "$N"); do
    ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$TMP/src.flv" -c copy \
      -f flv "rtmp://127.0.0.1:11935/live/s$i" >"$TMP/ff$i.log" 2>&1 &
    pubs+=($!)
  done
  sleep 3 # all connected, GOPs flowing
  local t0 c0 c1 streams
  t0=$(date +%s.%N); c0=$(ticks $srv)
  sleep "$SECS"
  c1=$(ticks $srv)
  streams=$(curl -s 127.0.0.1:18080/api/streams | grep -o '"source":"rtmp"' | wc -l)
  local rss; rss=$(rss_kib $srv)
  kill "${pubs[@]}" 2>/dev/null || true
  kill $srv; wait $srv 2>/dev/null || true
  awk -v c0="$c0" -v c1="$c1" -v hz="$hz" -v secs="$SECS" -v n="$N" -v s="$streams" \
      -v rss="$rss" -v tc="$1" 'BEGIN {
    cpu = (c1 - c0) / hz;
    printf "{\"transcode_audio\": %s, \"publishers\": %d, \"streams_live\": %d, \"seconds\": %d, \"server_cpu_s\": %.2f, \"core_fraction_per_stream\": %.4f, \"rss_kib\": %d}\n",
      tc, n, s, secs, cpu, cpu / secs / n, rss }'
}

run false
run true
