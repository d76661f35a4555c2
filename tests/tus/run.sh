#!/usr/bin/env bash
# Third-party tus clients against a real Cascade server (the debug build): tuspy (PyPI, pinned, in a
# virtualenv under target/) kills its client and then the server halfway through 512 MiB uploads
# and resumes (resume.py); tus-js-client (npm, pinned in web/package-lock.json) under Node pauses
# and resumes an upload of a generated clip (node.mjs). Everything is bounded by timeouts; servers
# are stopped on every exit path.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/target/debug/cascade
[[ -x $bin ]] || cargo build --locked
venv=target/tus-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import tusclient' 2>/dev/null; then
  python3 -m venv "$venv"
  timeout 300 "$venv/bin/pip" install -q --disable-pip-version-check "tuspy==1.1.0"
fi
work=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

status=0
timeout 900 "$venv/bin/python" tests/tus/resume.py "$bin" "$work" || status=1

mkdir -p "$work/data"
timeout 300 ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=320x240:rate=25" -f lavfi -i "sine=frequency=440" -t 4 \
  -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -movflags +faststart "$work/clip.mp4"
"$bin" user add node --password-stdin --data-dir "$work/data" <<<"node password 1" >/dev/null
token=$("$bin" token create node --data-dir "$work/data")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CASCADE_BIND="127.0.0.1:$port" CASCADE_RTMP_BIND=127.0.0.1:0 CASCADE_SRT_BIND=off CASCADE_DATA_DIR="$work/data" CASCADE_MIN_FREE_BYTES=0 "$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
CASCADE_URL="http://127.0.0.1:$port" CASCADE_TOKEN="$token" CASCADE_CLIP="$work/clip.mp4" CASCADE_DATA="$work/data" \
  timeout 300 node tests/tus/node.mjs || { status=1; tail -30 "$work/server.log"; }
exit $status
