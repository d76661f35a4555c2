#!/usr/bin/env bash
# schemathesis (PyPI, pinned, in a virtualenv under target/) against a real Cascade server (the
# debug build), from the server's own description (/api/openapi.json): every operation, a bounded
# number of generated requests each (examples, coverage and fuzzing phases), once anonymous, once
# with an admin's API token and once with an admin's session cookie, with a real video (a clip
# generated here, transcoded by the server) to find. It fails on any 5xx, and on any status, content type, header or body that the
# description does not allow. The seed is fixed so that a run is repeatable; SCHEMATHESIS_SEED
# picks another. Everything is bounded by timeouts; the server is stopped on every exit path.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
bin=$repo/target/debug/cascade
[[ -x $bin ]] || cargo build --locked
venv=target/api-venv
if [[ ! -x $venv/bin/schemathesis ]] || ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q 4.32.5; then
  python3 -m venv "$venv"
  timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==4.32.5"
fi
work=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/data"
timeout 300 ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=320x240:rate=25" -f lavfi -i "sine=frequency=440" -t 2 \
  -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac "$work/clip.mp4"
"$bin" user add admin --admin --password-stdin --data-dir "$work/data" <<<"admin password 1" >/dev/null
token=$("$bin" token create admin --data-dir "$work/data")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
CASCADE_BIND="127.0.0.1:$port" CASCADE_RTMP_BIND=127.0.0.1:0 CASCADE_SRT_BIND=off CASCADE_DATA_DIR="$work/data" CASCADE_MIN_FREE_BYTES=0 "$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!
timeout 30 bash -c "until curl -fs $url/healthz >/dev/null 2>&1; do sleep 0.1; done"

# A real video, transcoded to the end, for the operations that take a video's id.
id=$(curl -fsS --max-time 120 -H "Authorization: Bearer $token" -F title=clip -F "file=@$work/clip.mp4" "$url/api/videos" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
timeout 300 bash -c "until curl -fsS -H 'Authorization: Bearer $token' $url/api/videos/$id | grep -q '\"status\":\"ready\"'; do sleep 0.2; done" ||
  { echo "the clip did not become ready"; tail -30 "$work/server.log"; exit 1; }
# Every operation but deleting it sees the video (deleting it would leave the others nothing);
# playback gets a real token, oEmbed the video's watch URL.
hls=$(curl -fsS -H "Authorization: Bearer $token" "$url/api/videos/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["playback"]["hls"])')
play_token=${hls#*/play/}
play_token=${play_token%%/*}
cat >"$work/schemathesis.toml" <<TOML
[parameters]
"path.token" = "$play_token"
"path.path" = "hls/master.m3u8"
"query.url" = "$url/watch/$id"

[[operations]]
exclude-method = "DELETE"
parameters = { "path.id" = "$id" }
TOML

# A logged-in page: the session cookie, from this site (the CSRF rule); taken before the
# anonymous run's failed logins make this address wait. Logging out is left to the anonymous run:
# it would end the session the rest of that run uses.
cookie=$(curl -fsS --max-time 30 -o /dev/null -D - -H "Origin: $url" -H 'Content-Type: application/json' \
  -d '{"username":"admin","password":"admin password 1"}' "$url/api/session" | sed -n 's/^set-cookie: \(cascade_session=[^;]*\).*/\1/ip')
[[ -n $cookie ]] || { echo "could not log in"; exit 1; }

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
# From the work dir: schemathesis keeps a cache in its working directory.
run() {
  (cd "$work" && PYTHONPATH="$repo/tests/api" SCHEMATHESIS_HOOKS=hooks timeout 900 "$repo/$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$url/api/openapi.json" \
    --checks "$checks" --phases examples,coverage,fuzzing --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --seed "${SCHEMATHESIS_SEED:-20261201}" \
    --request-timeout 30 --generation-database none --no-color --workers 1 "$@")
}
status=0
echo "-- schemathesis, anonymous"
run || status=1
echo "-- schemathesis, with an admin's API token"
run -H "Authorization: Bearer $token" || status=1
echo "-- schemathesis, with an admin's session"
run -H "Cookie: $cookie" -H "Origin: $url" --exclude-path /api/session || status=1
if ((status != 0)); then
  echo "== server log (tail)"
  tail -40 "$work/server.log"
fi
exit $status
