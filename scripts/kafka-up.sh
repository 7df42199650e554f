#!/usr/bin/env bash
# Starts a local Kafka-compatible broker (Tansu) for nudgeflow: for the
# integration tests, the benchmarks, and trying `nudgeflow run` by hand.
#
#   scripts/kafka-up.sh [--engine sqlite|memory] [--dir DIR] [--port P]
#                       [--partitions N] [--topics a,b:1,c] [--owner PID]
#   scripts/kafka-up.sh --install-only
#
# Installs Tansu only when missing (`cargo install tansu --locked --features
# dynostore,libsql` into ${NUDGEFLOW_CACHE:-~/.cache/nudgeflow}/tansu, about
# 10-15 minutes on two cores; one install even when several test binaries
# ask at once). Starts it on a free loopback port with its data in DIR
# (default: a new temporary directory), creates the topics (default: the
# job config's default topics; `name:N` gives one topic N partitions
# instead of --partitions) and prints
#   KAFKA_BROKERS=127.0.0.1:P
#   KAFKA_DIR=DIR
#   KAFKA_PID=PID
# The sqlite engine (default) keeps records and committed offsets across a
# restart of the broker; memory is faster but cannot resume correctly (see
# the README). With --owner PID the broker is stopped when PID exits.
# Stop it with scripts/kafka-down.sh DIR.
set -euo pipefail

engine=sqlite dir="" port="" partitions=2 owner="" install_only=0
topics="nudgeflow.events,nudgeflow.preferences,nudgeflow.consent,nudgeflow.receipts,nudgeflow.erasures,nudgeflow.dispatches,nudgeflow.suppressions,nudgeflow.dead-letters,nudgeflow.churn-signals"
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) engine="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --partitions) partitions="$2"; shift 2 ;;
    --topics) topics="$2"; shift 2 ;;
    --owner) owner="$2"; shift 2 ;;
    --install-only) install_only=1; shift ;;
    *) echo "kafka-up.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

cache="${NUDGEFLOW_CACHE:-$HOME/.cache/nudgeflow}"
tansu="${TANSU:-}"
if [ -z "$tansu" ]; then tansu="$(command -v tansu || true)"; fi
if [ -z "$tansu" ]; then tansu="$cache/tansu/bin/tansu"; fi
if [ ! -x "$tansu" ]; then
  mkdir -p "$cache"
  (
    flock 9
    if [ ! -x "$tansu" ]; then
      echo "kafka-up.sh: installing Tansu into $cache/tansu (once; 10-15 minutes)" >&2
      cargo install tansu --locked --features dynostore,libsql --root "$cache/tansu" >&2
    fi
  ) 9>"$cache/tansu.lock"
fi
[ "$install_only" = 1 ] && { echo "kafka-up.sh: Tansu is $tansu" >&2; exit 0; }

if [ -z "$dir" ]; then dir="$(mktemp -d "${TMPDIR:-/tmp}/nudgeflow-kafka.XXXXXX")"; fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
# A port given, or the one of a broker started before in DIR, is kept.
given_port="$port"
if [ -z "$port" ]; then
  if [ -f "$dir/port" ]; then port="$(cat "$dir/port")"; given_port="$port"; else
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  fi
fi
echo "$port" >"$dir/port"
case "$engine" in
  sqlite) storage="sqlite://tansu.db" ;;
  memory) storage="memory://tansu/" ;;
  *) echo "kafka-up.sh: --engine is sqlite or memory, not $engine" >&2; exit 2 ;;
esac
url="tcp://127.0.0.1:$port"
fresh=1
[ -f "$dir/tansu.db" ] && fresh=0

start_broker() {
  (cd "$dir" && exec "$tansu" broker --listener-url "$url" --advertised-listener-url "$url" \
     --storage-engine "$storage" >>"$dir/tansu.log" 2>&1) &
  echo $! >"$dir/pid"
}
# Waits until the broker listens; fails when it exits first.
wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then return 1; fi
    sleep 0.05
  done
  echo "kafka-up.sh: Tansu did not listen on $port within 10 s" >&2; exit 1
}

# A free port found above may be taken by another process before Tansu
# binds it: then try another (only when no --port was given).
for attempt in 1 2 3 4 5; do
  start_broker
  if wait_port; then break; fi
  if [ -n "$given_port" ] || [ "$attempt" = 5 ]; then
    echo "kafka-up.sh: Tansu exited; its log ($dir/tansu.log) ends:" >&2
    tail -20 "$dir/tansu.log" >&2; exit 1
  fi
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  echo "$port" >"$dir/port"
  url="tcp://127.0.0.1:$port"
done
if [ "$fresh" = 1 ]; then
  IFS=, read -ra names <<<"$topics"
  for t in "${names[@]}"; do
    [ -z "$t" ] && continue
    n="$partitions"
    case "$t" in *:*) n="${t##*:}"; t="${t%:*}" ;; esac
    "$tansu" topic create "$t" --broker "$url" --partitions "$n" >>"$dir/tansu.log" 2>&1
  done
  if [ "$engine" = sqlite ]; then
    # Tansu reads each fetched record's headers by scanning an unindexed
    # table: index it, or records with headers (dispatches, binary-mode
    # events) are read at seconds per 10k.
    python3 - "$dir/tansu.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("create index if not exists header_topition_offset on header (topition, offset_id)")
db.commit()
PY
  fi
fi
if [ -n "$owner" ]; then
  pid="$(cat "$dir/pid")"
  (while kill -0 "$owner" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
   kill -INT "$pid" 2>/dev/null || true; sleep 3; kill -KILL "$pid" 2>/dev/null || true) \
    >/dev/null 2>&1 </dev/null &
fi
echo "KAFKA_BROKERS=127.0.0.1:$port"
echo "KAFKA_DIR=$dir"
echo "KAFKA_PID=$(cat "$dir/pid")"
