#!/usr/bin/env bash
# Throughput and memory benchmark: generates 1M events for 100k users (once,
# cached under target/bench/) and replays them with dataflows/core.toml and
# with the richest domain spec (dataflows/ecommerce.toml), printing events/s,
# wall time, peak memory and bytes of state per user.
#
# usage: scripts/bench.sh [EVENTS] [USERS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:-1000000}
USERS=${2:-100000}
WORKERS=${3:-2}
SEED=7
DATA=target/bench/data-$EVENTS-$USERS-$SEED

cargo build --release --quiet
BIN=target/release/nudgeflow

if [ ! -f "$DATA/.complete" ]; then
  echo "generating $EVENTS events for $USERS users into $DATA ..."
  rm -rf "$DATA"
  /usr/bin/time -f "  generated in %e s" "$BIN" gen --events "$EVENTS" --users "$USERS" --seed "$SEED" --out "$DATA"
  touch "$DATA/.complete"
fi
records=$(cat "$DATA"/*.jsonl | wc -l)
bytes=$(cat "$DATA"/*.jsonl | wc -c)
echo "input: $records records ($EVENTS events), $((bytes / 1048576)) MiB, $USERS users; $WORKERS workers; $(nproc) cores"

# Baseline resident memory of the binary with an empty input.
EMPTY=target/bench/empty
mkdir -p "$EMPTY" && : > "$EMPTY/events.jsonl"
base_kb=$(/usr/bin/time -f "%M" "$BIN" replay --spec dataflows/core.toml --fixture "$EMPTY" --out target/bench/out-empty -q -w "$WORKERS" 2>&1 >/dev/null | tail -1)

# Each run's wall time, peak RSS and CPU time (user + system: on this shared
# VM the same binary's CPU time drifts by up to 1.6x over an hour, so it
# tells a slow machine from a slow build).
for spec in core ecommerce; do
  out=target/bench/out-$spec
  best=""
  for run in 1 2 3; do
    stats=$(/usr/bin/time -f "%e %M %U %S" "$BIN" replay --spec "dataflows/$spec.toml" --fixture "$DATA" --out "$out" -q -w "$WORKERS" 2>&1 >/dev/null | tail -1)
    if [ -z "$best" ] || awk "BEGIN{exit !(${stats%% *} < ${best%% *})}"; then best=$stats; fi
  done
  read -r wall peak_kb user sys <<< "$best"
  dispatches=$(wc -l < "$out/dispatches.jsonl")
  awk -v spec="$spec" -v ev="$EVENTS" -v rec="$records" -v wall="$wall" -v peak="$peak_kb" -v base="$base_kb" -v users="$USERS" -v d="$dispatches" -v cpu="$(awk "BEGIN{print $user + $sys}")" 'BEGIN {
    printf "%-10s %9.0f events/s  %9.0f records/s  wall %.2f s (best of 3, whole process incl. writing outputs)  cpu %.2f s  peak RSS %.0f MiB  state/user <= %.0f B  dispatches %d\n",
      spec, ev / wall, rec / wall, wall, cpu, peak / 1024, (peak - base) * 1024 / users, d }'
done
