#!/usr/bin/env bash
# Quick start: install what is missing, build, and serve Cascade at http://localhost:8000/upload
# with embedded defaults (sled + ./data). Every CASCADE_* variable is honoured (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
bind=${CASCADE_BIND:-0.0.0.0:8000}
echo "Cascade: open http://localhost:${bind##*:}/upload"
echo "Uploading needs an account; create the first admin (in another terminal, while this runs):"
echo "  ./target/release/cascade user add NAME --admin    # prints a generated password"
exec ./target/release/cascade serve "$@"
