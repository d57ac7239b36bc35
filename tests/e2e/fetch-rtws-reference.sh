#!/usr/bin/env bash
# Fetches the RTWebSocket reference implementations by the protocol's author, at pinned
# revisions, for the interoperability tests (never committed to this repository):
#   DIR/client: rtws.js, amf0.js, tcmessage.js, tcconn.js (github.com/zenomt/rtwebsocket)
#   DIR/rtmfp-cpp: the C++ library and its test/tcserver (github.com/zenomt/rtmfp-cpp)
# From GitHub when it can be reached; otherwise from a local mirror of the repositories
# (RTWS_MIRROR, default ../.mirror beside the checkout: directories owner+name/repo, bare git).
# Prints what it got; exits 0 either way (the tests say when they run without the reference).
# Usage: fetch-rtws-reference.sh DIR
set -uo pipefail
dir=${1:?usage: fetch-rtws-reference.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
mirror=${RTWS_MIRROR:-$here/../../../.mirror}
client_rev=b17bbb1b7a12b2e2cc30b6b96c53b210d7affeca
cpp_rev=0917f423cffb99e1c9bfc9e0e0114fb12c568ea4
files=(rtws.js amf0.js tcmessage.js tcconn.js)
mkdir -p "$dir/client"

got_client=
for f in "${files[@]}"; do
  timeout 20 curl -fsSL "https://raw.githubusercontent.com/zenomt/rtwebsocket/$client_rev/$f" -o "$dir/client/$f" 2>/dev/null || break
done
if [ -s "$dir/client/tcconn.js" ]; then
  got_client="github.com/zenomt/rtwebsocket@${client_rev:0:12}"
elif git --git-dir="$mirror/zenomt+rtwebsocket/repo" cat-file -e "$client_rev" 2>/dev/null; then
  for f in "${files[@]}"; do git --git-dir="$mirror/zenomt+rtwebsocket/repo" show "$client_rev:$f" > "$dir/client/$f"; done
  got_client="github.com/zenomt/rtwebsocket@${client_rev:0:12} (from a local mirror)"
fi
if [ -n "$got_client" ]; then
  echo "$got_client" > "$dir/client/REVISION"
  echo "rtws reference client: $got_client → $dir/client"
else
  rm -rf "$dir/client"
  echo "rtws reference client: not reachable (GitHub nor a mirror)"
fi

rm -rf "$dir/rtmfp-cpp"
if timeout 60 git clone -q https://github.com/zenomt/rtmfp-cpp "$dir/rtmfp-cpp" 2>/dev/null \
  && git -C "$dir/rtmfp-cpp" checkout -q "$cpp_rev" 2>/dev/null; then
  echo "rtmfp-cpp: github.com/zenomt/rtmfp-cpp@${cpp_rev:0:12} → $dir/rtmfp-cpp"
elif git --git-dir="$mirror/zenomt+rtmfp-cpp/repo" cat-file -e "$cpp_rev" 2>/dev/null; then
  mkdir -p "$dir/rtmfp-cpp"
  git --git-dir="$mirror/zenomt+rtmfp-cpp/repo" archive "$cpp_rev" | tar -x -C "$dir/rtmfp-cpp"
  echo "rtmfp-cpp: github.com/zenomt/rtmfp-cpp@${cpp_rev:0:12} (from a local mirror) → $dir/rtmfp-cpp"
else
  rm -rf "$dir/rtmfp-cpp"
  echo "rtmfp-cpp: not reachable (GitHub nor a mirror)"
fi
exit 0
