#!/usr/bin/env bash
# Stops the broker scripts/kafka-up.sh started with its data in DIR:
# SIGINT (Tansu stops at once; SIGTERM makes it wait for clients), then
# SIGKILL after 5 s. The data stays in DIR (a restart with --dir DIR and the
# sqlite engine resumes it); remove DIR to discard it.
set -euo pipefail
dir="${1:?usage: kafka-down.sh DIR}"
pid="$(cat "$dir/pid" 2>/dev/null || true)"
[ -n "$pid" ] || { echo "kafka-down.sh: no broker pid in $dir" >&2; exit 1; }
kill -INT "$pid" 2>/dev/null || exit 0
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.05; done
kill -KILL "$pid" 2>/dev/null || true
