#!/usr/bin/env bash
# Browser tests: a real Cascade server (the debug build) on a free loopback port with a fresh data
# dir, clips generated with ffmpeg, and tests/browser/run.mjs driving Debian's Chromium through
# playwright-core. Everything is bounded by timeouts; the server is stopped on every exit path.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=./target/debug/cascade
[[ -x $bin ]] || cargo build --locked
work=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  if [[ -n ${BROWSER_KEEP:-} ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

mkdir -p "$work/clips" "$work/data"
gen() { # name seconds
  timeout 300 ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$2" -c:v libx264 -preset ultrafast -crf 28 \
    -pix_fmt yuv420p -c:a aac -b:a 96k "$work/clips/$1"
}
gen short.mp4 12
gen long.mp4 60
timeout 120 ffmpeg -nostdin -v error -y -i "$work/clips/long.mp4" -c copy "$work/clips/long.mkv"

# An admin (the admin page), an uploader for the pages (logged in through /login) and an API
# token for the script's own calls.
admin=root admin_password="browser admin password"
"$bin" user add "$admin" --admin --password-stdin --data-dir "$work/data" <<<"$admin_password"
user=browser password="browser password 1"
"$bin" user add "$user" --password-stdin --data-dir "$work/data" <<<"$password"
token=$("$bin" token create "$user" --data-dir "$work/data")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
# Two other origins for the cross-origin scenario (pages that run.mjs serves itself): one that
# may play and frame Cascade's videos, one that may not.
allowed_port=$(free_port) other_port=$(free_port)
srt_port=$(python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CASCADE_BIND="127.0.0.1:$port" CASCADE_RTMP_BIND=127.0.0.1:0 CASCADE_SRT_BIND="127.0.0.1:$srt_port" CASCADE_LIVE_RECONNECT_S=2 CASCADE_DATA_DIR="$work/data" CASCADE_MIN_FREE_BYTES=0 CASCADE_SIGNUP=invite \
  CASCADE_CORS_ORIGINS="http://127.0.0.1:$allowed_port" CASCADE_EMBED_ORIGINS="'self' http://127.0.0.1:$allowed_port" \
  "$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/server.log"; exit 1; }

mkdir -p test-artifacts
status=0
CASCADE_URL="http://127.0.0.1:$port" CASCADE_CLIPS="$work/clips" CASCADE_USER="$user" CASCADE_PASSWORD="$password" CASCADE_TOKEN="$token" \
  CASCADE_ADMIN="$admin" CASCADE_ADMIN_PASSWORD="$admin_password" CASCADE_FOREIGN_PORTS="$allowed_port,$other_port" \
  timeout 1200 node tests/browser/run.mjs || status=$?
if ((status)); then
  echo "--- server log (tail) ---"
  tail -50 "$work/server.log"
fi
exit $status
