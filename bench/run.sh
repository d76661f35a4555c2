#!/usr/bin/env bash
# Benchmarks: installs what is missing (wrk, nginx, GNU time, psql), builds the release binary, and runs
# bench/bench.py, which prints one Markdown table (and writes JSON) comparing Cascade with plain
# ffmpeg / cp / nginx measured side by side in the same run. Not a test: nothing here asserts times.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
missing=()
for p in wrk nginx-light time postgresql-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
exec timeout 1800 python3 bench/bench.py "$@"
