#!/usr/bin/env bash
# Installs what Cascade needs and is missing: Debian packages (GStreamer 1.22 + plugins, FFmpeg,
# Node.js/npm, and Chromium for the browser tests with --with-browser) and the pinned player
# libraries from web/package-lock.json. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

with_browser=0
[[ "${1:-}" == "--with-browser" ]] && with_browser=1

pkgs=(ca-certificates build-essential pkg-config curl
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-nice
  ffmpeg nodejs npm)
# The test command's extras: the browser, and psql to drop the test databases.
((with_browser)) && pkgs+=(chromium postgresql-client)

missing=()
for p in "${pkgs[@]}"; do
  # npm and nodejs may come from elsewhere (e.g. NodeSource): a working binary is enough.
  case "$p" in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  [[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "setup: no Rust toolchain found. Install Rust ≥ 1.95 with rustup (https://rustup.rs) and run this again." >&2
  exit 1
fi

# Player libraries, exactly as locked (served by Cascade itself: no CDN).
if [[ ! -f web/node_modules/.package-lock.json ]] || ! cmp -s web/package-lock.json web/node_modules/.cascade-lock; then
  echo "setup: installing web dependencies from web/package-lock.json"
  (cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  cp web/package-lock.json web/node_modules/.cascade-lock
fi
