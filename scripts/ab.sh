#!/usr/bin/env bash
# A/B timing of two nudgeflow binaries on the benchmark data, alternating
# them run by run (this machine's speed drifts by ±25% within minutes, so
# only alternated runs compare). Prints best and mean wall time and best
# CPU time (user + system) of each.
#
# usage: scripts/ab.sh OLD_BIN NEW_BIN [WORKERS] [RUNS] [SPEC]
# e.g.:  git stash; cargo build --release; cp target/release/nudgeflow /tmp/old
#        git stash pop; cargo build --release
#        scripts/ab.sh /tmp/old target/release/nudgeflow 2
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 WORKERS=${3:-2} RUNS=${4:-6} SPEC=${5:-dataflows/core.toml}
DATA=target/bench/data-1000000-100000-7
[ -f "$DATA/.complete" ] || { echo "no benchmark data: run scripts/bench.sh once" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for _ in $(seq "$RUNS"); do
  for side in old new; do
    bin=$OLD; [ "$side" = new ] && bin=$NEW
    /usr/bin/time -f "$side %e %U %S" "$bin" replay --spec "$SPEC" --fixture "$DATA" \
      --out "$out/$side" -q -w "$WORKERS" 2>&1 >/dev/null | tail -1
  done
done | awk '{ w = $2; c = $3 + $4
  if (!($1 in bw) || w < bw[$1]) bw[$1] = w
  if (!($1 in bc) || c < bc[$1]) bc[$1] = c
  sw[$1] += w; n[$1]++ }
  END { for (k in bw) printf "%s: best wall %.2f s, mean wall %.2f s, best cpu %.2f s (%d runs)\n", k, bw[k], sw[k] / n[k], bc[k], n[k] }' | sort -r
