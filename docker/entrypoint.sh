#!/bin/sh
# Checks the data dir, prints the effective settings, then execs Cascade (PID 1 is tini).
set -eu
data="${CASCADE_DATA_DIR:-/data}"
mkdir -p "$data" 2>/dev/null || true
if ! touch "$data/.write-test" 2>/dev/null; then
  echo "cascade: data dir $data is not writable by uid $(id -u); fix the volume's ownership" >&2
  exit 1
fi
rm -f "$data/.write-test"
echo "cascade: starting with:"
env | grep '^CASCADE_' | grep -v '^CASCADE_SECRET=' | sort | sed 's/^/  /'
[ -n "${CASCADE_SECRET:-}" ] && echo "  CASCADE_SECRET=<set>"
if [ "$#" -eq 0 ]; then set -- serve; fi
exec /usr/local/bin/cascade "$@"
