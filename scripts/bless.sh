#!/usr/bin/env bash
# Regenerates the expected outputs of golden fixture cases from the engine
# (the decisions, summary.json and, with [analytics], retention.json,
# delivery.json and churn.jsonl, all compared by tests/golden.rs,
# and the explanations in expected/explain/<user>.txt, by tests/explain.rs),
# and cross-checks the decisions of each case against the independent oracle
# (scripts/oracle.py). Review `git diff fixtures/` before committing.
#
# usage: scripts/bless.sh [CASE...]     (default: every case with expected/)
set -euo pipefail
cd "$(dirname "$0")/.."
# BIN=target/debug/nudgeflow scripts/bless.sh ... skips the release build.
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=target/release/nudgeflow
fi
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  for d in fixtures/*/expected; do cases+=("$(basename "$(dirname "$d")")"); done
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
disagree=0
for case in "${cases[@]}"; do
  dir=fixtures/$case
  if [ -f "$dir/spec.toml" ]; then spec=$dir/spec.toml; else spec=$(tr -d '[:space:]' < "$dir/spec.ref"); fi
  mkdir -p "$dir/expected"
  "$BIN" replay --spec "$spec" --fixture "$dir" --out "$dir/expected" -q
  # Churn signals are expected only of cases whose spec computes churn risk.
  [ -s "$dir/expected/churn_signals.jsonl" ] || rm -f "$dir/expected/churn_signals.jsonl"
  for f in "$dir"/expected/explain/*.txt; do
    [ -e "$f" ] || continue
    "$BIN" explain --spec "$spec" --fixture "$dir" --user "$(basename "$f" .txt)" > "$f"
  done
  python3 scripts/oracle.py --spec "$spec" --fixture "$dir" --out "$tmp/$case" > /dev/null
  if python3 scripts/compare.py "$dir/expected" "$tmp/$case" > "$tmp/$case.diff"; then
    echo "ok       $case"
  elif [ -f "$dir/ORACLE_DIFFERS.md" ]; then
    echo "known    $case (engine and oracle differ as $dir/ORACLE_DIFFERS.md explains)"
  else
    echo "DISAGREE $case (engine vs oracle):"; sed 's/^/    /' "$tmp/$case.diff"; disagree=1
  fi
done
exit $disagree
