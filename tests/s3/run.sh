#!/usr/bin/env bash
# Starts the tests' S3-compatible server (tests/s3/server.py: moto's standalone server, pinned, in
# a virtualenv under target/) and passes its stdin and stdout through: it prints one JSON line when
# ready and stops when its stdin closes. `--install` only makes the virtualenv.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/s3-venv
# Test binaries may start servers at the same time: one makes the virtualenv, the others wait.
mkdir -p target
exec 9>target/s3-venv.lock
flock -w 600 9
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import moto, flask_cors' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==5.2.1" >&2
fi
flock -u 9
exec 9>&-
[[ ${1:-} == --install ]] && exit 0
exec "$venv/bin/python" tests/s3/server.py
