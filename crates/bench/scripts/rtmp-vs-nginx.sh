#!/usr/bin/env bash
# RTMP ingest side by side: onair and nginx-rtmp (Debian's libnginx-mod-rtmp, one worker), each
# taking N FFmpeg publishers that send a pre-encoded 720p30 H.264 + AAC file with `-c copy`
# (FFmpeg does no encoding), compared like with like:
#   relay only:  onair with LL-HLS off and AAC → Opus off, against nginx-rtmp `live on`; and
#                onair so with no GOP kept for late readers (`streams.gop_cache_bytes = 0`),
#                as nginx-rtmp keeps none;
#   HLS:         onair with LL-HLS on (its default; 2 s segments, a 15-segment window kept in
#                memory), AAC → Opus off, against nginx-rtmp `hls on` with 2 s fragments and a
#                30 s playlist (the same window, written to files);
#   and onair's defaults (LL-HLS and AAC → Opus on).
# Server CPU from /proc/PID/stat over a fixed window, RSS from /proc/PID/status; reported per
# publisher and as publishers per core. Bounded: six runs of SECONDS each.
# Run inside the loopback-only namespace:
#   ../shared/tools/netns-run crates/bench/scripts/rtmp-vs-nginx.sh target/release/onair [N] [SECONDS]
set -euo pipefail
BIN=${1:?usage: rtmp-vs-nginx.sh PATH_TO_ONAIR [N] [SECONDS]}
N=${2:-8}
SECS=${3:-20}
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
ip link set lo up 2>/dev/null || true
command -v nginx >/dev/null || { echo "apt-get install -y nginx libnginx-mod-rtmp" >&2; exit 2; }

# 10 s of 720p30 H.264 (baseline, 2.5 Mbit/s) + 48 kHz stereo AAC, made once.
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=1280x720:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -ac 2 -t 10 \
  -c:v libx264 -preset veryfast -profile:v baseline -pix_fmt yuv420p -g 60 -b:v 2500k \
  -c:a aac -b:a 128k -ar 48000 -f flv "$TMP/src.flv"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

# One process, as onair is one process: no master, one worker.
cat >"$TMP/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_processes 1;
error_log $TMP/nginx.err warn;
pid $TMP/nginx.pid;
events { worker_connections 1024; }
rtmp { server { listen 127.0.0.1:11936; chunk_size 4096;
  application live { live on; record off; } } }
EOF
# The same, packaging HLS: 2 s fragments (cut at keyframes, 2 s apart in the source) and a
# 30 s playlist, as onair's 15 segments of 2 s.
mkdir -p "$TMP/hls"
sed "s|application live { live on; record off; }|application live { live on; record off; hls on; hls_path $TMP/hls; hls_fragment 2s; hls_playlist_length 30s; }|" \
  "$TMP/nginx.conf" >"$TMP/nginx-hls.conf"

# $1 = label, $2 = port, $3 = a directory the server writes its HLS files to (their size is
# memory too: the kernel's page cache holds them, outside the server's RSS); pid in $srv.
measure() {
  local label=$1 port=$2 dir=${3:-}
  sleep 0.5
  local idle; idle=$(rss_kib "$srv")
  local pubs=()
  for i in $(seq 1 "$N"); do
    ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$TMP/src.flv" -c copy \
      -f flv "rtmp://127.0.0.1:$port/live/s$i" >"$TMP/ff-$label-$i.log" 2>&1 &
    pubs+=($!)
  done
  sleep 3 # all connected, GOPs flowing
  local c0 c1 rss alive=0
  c0=$(ticks "$srv")
  sleep "$SECS"
  c1=$(ticks "$srv")
  rss=$(rss_kib "$srv")
  local files=0
  [ -n "$dir" ] && files=$(du -sk "$dir" | cut -f1)
  for p in "${pubs[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
  kill "${pubs[@]}" 2>/dev/null || true
  kill "$srv"; wait "$srv" 2>/dev/null || true
  awk -v l="$label" -v c0="$c0" -v c1="$c1" -v hz="$hz" -v secs="$SECS" -v n="$N" \
      -v alive="$alive" -v rss="$rss" -v idle="$idle" -v files="$files" 'BEGIN {
    cpu = (c1 - c0) / hz; per = cpu / secs / n;
    printf "{\"server\": \"%s\", \"publishers\": %d, \"publishers_still_sending\": %d, \"seconds\": %d, \"server_cpu_s\": %.2f, \"core_fraction_per_publisher\": %.4f, \"publishers_per_core\": %.0f, \"rss_kib\": %d, \"rss_per_publisher_kib\": %.0f, \"hls_files_per_publisher_kib\": %.0f}\n",
      l, n, alive, secs, cpu, per, (per > 0 ? 1 / per : 0), rss, (rss - idle) / n, files / n }'
}

onair() { # label, hls, transcode, [GOP cache bytes]
  ONAIR_HTTP_LISTEN=127.0.0.1:18080 ONAIR_MEDIA_PORT=18500 ONAIR_RTMP_LISTEN=127.0.0.1:11935 \
    ONAIR_HLS_ENABLED=$2 ONAIR_RTMP_TRANSCODE_AUDIO=$3 ONAIR_STREAMS_GOP_CACHE_BYTES=${4:-16777216} \
    RUST_LOG=warn "$BIN" >"$TMP/onair.log" 2>&1 &
  srv=$!
  measure "$1" 11935
}
nginx_rtmp() { # label, config, HLS directory
  nginx -c "$2" -p "$TMP" >"$TMP/nginx.out" 2>&1 &
  srv=$!
  measure "$1" 11936 "${3:-}"
}
onair onair-relay false false
onair onair-relay-nogop false false 0
nginx_rtmp nginx-rtmp-relay "$TMP/nginx.conf"
onair onair-llhls true false
nginx_rtmp nginx-rtmp-hls "$TMP/nginx-hls.conf" "$TMP/hls"
onair onair-defaults true true
