#!/usr/bin/env bash
# Runs every test: installs what is missing, then unit + integration tests (real GStreamer and
# FFmpeg pipelines on clips generated at test time) and the browser tests (real Chromium playing
# through dash.js and hls.js against a real Cascade server), and third-party tus clients.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --with-browser
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check, clippy"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo test"
cargo build --locked --all-targets
cargo test --locked -- --test-threads="${CASCADE_TEST_THREADS:-2}"

echo "== third-party tus clients (tuspy, tus-js-client under Node)"
./tests/tus/run.sh

echo "== the API description against a real server (schemathesis)"
./tests/api/run.sh

echo "== browser tests"
./tests/browser/run.sh

echo "== Docker runtime proof (debootstrap + chroot; no Docker engine needed)"
cargo build --release --locked
./docker/chroot-proof.sh
