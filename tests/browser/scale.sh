#!/usr/bin/env bash
# Browser test of a scaled site: two API nodes (`serve --no-workers`) and two `cascade worker`
# processes, each with a data dir of its own, on one fresh PostgreSQL database (the machine's) and
# a bucket of the tests' S3 server (tests/s3). tests/browser/scale.mjs uploads through node A and
# watches through node B with dash.js and hls.js in Chromium while a worker encodes, through the
# kill -9 of the worker holding the job and a restart of the database. Every
# process, the S3 server and the database are removed on every exit path.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=./target/debug/cascade
[[ -x $bin ]] || cargo build --locked
work=$(mktemp -d)
pg="${TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
db="cascade_test_browser_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  if [[ -n ${BROWSER_KEEP:-} ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The S3 server prints its endpoint and credentials, then serves until its stdin closes (or it is
# killed, as cleanup does).
mkfifo "$work/s3.in"
./tests/s3/run.sh <"$work/s3.in" >"$work/s3.out" 2>"$work/s3.log" &
pids+=($!)
exec 7>"$work/s3.in"
for _ in $(seq 1 4500); do [[ -s $work/s3.out ]] && break; sleep 0.2; done
[[ -s $work/s3.out ]] || { cat "$work/s3.log"; exit 1; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/s3.out" "$1"; }
export AWS_ENDPOINT_URL=$(field endpoint) AWS_REGION=$(field region) AWS_ACCESS_KEY_ID=$(field key) AWS_SECRET_ACCESS_KEY=$(field secret)
export AWS_ALLOW_HTTP=true
export CASCADE_DATABASE_URL="$pg/$db" CASCADE_STORAGE_URL="s3://cascade-test/browser-$$" CASCADE_MIN_FREE_BYTES=0
export CASCADE_STREAM_INGEST=false CASCADE_JOB_LEASE=5 CASCADE_LOG=info

timeout 300 ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 60 -c:v libx264 -preset ultrafast -crf 28 \
  -pix_fmt yuv420p -c:a aac -b:a 96k "$work/clip.mp4"
mkdir -p "$work/a" "$work/b" "$work/w1" "$work/w2"
"$bin" user add scaled --password-stdin --data-dir "$work/a" <<<"scaled browser password"
token=$("$bin" token create scaled --data-dir "$work/a")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A url
for node in a b; do
  port=$(free_port)
  CASCADE_BIND="127.0.0.1:$port" CASCADE_RTMP_BIND=127.0.0.1:0 CASCADE_SRT_BIND=off CASCADE_DATA_DIR="$work/$node" CASCADE_NO_WORKERS=true \
    "$bin" serve >"$work/$node.log" 2>&1 &
  pids+=($!)
  url[$node]="http://127.0.0.1:$port"
done
workers=()
for w in w1 w2; do
  CASCADE_DATA_DIR="$work/$w" CASCADE_WORKERS=1 "$bin" worker >"$work/$w.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  # Its id as a job holder, from its start-up line.
  for _ in $(seq 1 150); do grep -q ' node=' "$work/$w.log" && break; sleep 0.2; done
  node=$(grep -o ' node=[^ ]*' "$work/$w.log" | head -1 | cut -d= -f2)
  [[ -n $node ]] || { tail -30 "$work/$w.log"; exit 1; }
  workers+=("$pid=$node")
done
for node in a b; do
  for _ in $(seq 1 150); do curl -fs "${url[$node]}/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fs "${url[$node]}/healthz" >/dev/null || { tail -30 "$work/$node.log"; exit 1; }
done

mkdir -p test-artifacts
status=0
# The test kills the worker that holds the job and restarts the machine's PostgreSQL cluster
# (pg_ctlcluster, as tests/scale_s3.rs does) while the players play.
CASCADE_A="${url[a]}" CASCADE_B="${url[b]}" CASCADE_TOKEN="$token" CASCADE_CLIP="$work/clip.mp4" \
  CASCADE_DB="$pg/$db" CASCADE_WORKERS="${workers[*]}" PG_VERSION=$(ls /etc/postgresql | head -1) \
  timeout 900 node tests/browser/scale.mjs || status=$?
if ((status)); then
  for log in a b w1 w2; do echo "--- $log log (tail) ---"; tail -20 "$work/$log.log"; done
fi
# Node B served everything from the bucket: nothing of the video is on its disk.
if [[ -n $(find "$work/b" -path '*/media/*' -type f) ]]; then echo "not ok - node B keeps media files"; status=1; fi
exit $status
