#!/usr/bin/env bash
# Runs every test: installs what is missing, then unit + integration tests (real GStreamer and
# FFmpeg pipelines on clips generated at test time) and the browser tests (real Chromium playing
# through dash.js and hls.js against a real Cascade server), and third-party tus clients.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage prints its minutes, so a slow run says where the time went (the whole must stay
# under 45 minutes on 2 cores).
started=$SECONDS stage_started=$SECONDS
stage() {
  echo "   (that took $(((SECONDS - stage_started) / 60))m$(((SECONDS - stage_started) % 60))s; $(((SECONDS - started) / 60))m in all)"
  stage_started=$SECONDS
  echo "== $*"
}
echo "== set-up"
./scripts/setup.sh --with-browser
export PATH="$HOME/.cargo/bin:$PATH"
# The tests' S3-compatible server (moto, pinned, in target/s3-venv); each test binary that needs
# it starts its own and stops it when it exits.
./tests/s3/run.sh --install

stage "cargo fmt --check, clippy"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

stage "cargo test"
# The tests' PostgreSQL databases (unit tests, the scale tests, the scaled pass below) are dropped
# at the end, whatever the outcome.
pg="${TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
drop_test_databases() {
  psql "$pg/postgres" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'cascade\_test\_%' OR datname LIKE 'cascade\_unit\_%'" |
    while read -r db; do psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
}
trap drop_test_databases EXIT
cargo build --locked --all-targets
cargo test --locked -- --test-threads="${CASCADE_TEST_THREADS:-2}"

stage "integration tests again in the scaled configuration: records in PostgreSQL, media in S3"
# Each test server gets a database of its own (tests/common: one per data dir) on the machine's
# PostgreSQL and a prefix of its own in a bucket of the tests' S3 server; a failure prints
# "[configuration: scaled (PostgreSQL + S3)]". (The S3 servers keep everything in memory and end
# with their test binaries.)
# Every integration file runs again, except the three that ran above in the scaled configuration
# already, which they set up themselves (scale_s3: the multi-process site; storage: `cascade
# check` and redirects; migrate: an embedded installation moved to PostgreSQL and S3).
scaled=()
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  [[ $name == scale_s3 || $name == storage || $name == migrate ]] || scaled+=(--test "$name")
done
TEST_STORE=postgres TEST_STORAGE=s3 cargo test --locked "${scaled[@]}" -- --test-threads="${CASCADE_TEST_THREADS:-2}"

stage "third-party tus clients (tuspy, tus-js-client under Node)"
./tests/tus/run.sh

stage "the API description against a real server (schemathesis)"
./tests/api/run.sh

stage "browser tests"
./tests/browser/run.sh

stage "browser test of a scaled site: 2 API nodes + 2 workers on PostgreSQL and S3"
./tests/browser/scale.sh

stage "Docker runtime proof (debootstrap + chroot; no Docker engine needed)"
# With the debug build the tests ran: the runtime stage's question is whether its packages carry
# every library and plugin the binary needs, which is the same for both profiles. A release
# build here would add six of the 45 minutes; ./scripts/run.sh and ./bench/run.sh build it, and
# CASCADE_BIN=target/release/cascade ./docker/chroot-proof.sh proves it the same way.
CASCADE_BIN=target/debug/cascade ./docker/chroot-proof.sh
stage "done"
