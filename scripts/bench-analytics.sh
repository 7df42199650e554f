#!/usr/bin/env bash
# Analytics benchmark (DESIGN.md §5, §8), each figure printed beside the
# limit it is held to, all measured in this run:
#
# 1. cost: the 1M-event benchmark input (scripts/bench.sh's, 100k users)
#    replayed with dataflows/ecommerce.toml as shipped ([analytics] with
#    churn: retention, churn state, delivery counts and the view, written
#    to retention.json, delivery.json and churn.jsonl) and with the same
#    spec without its [analytics] tables, alternately, 3 runs each; the
#    medians' throughput ratio (limit: analytics costs at most 20%), and
#    the extra peak memory per active user.
# 2. queries: 1M users (`nudgeflow gen retention`), served by `replay
#    --serve`, under concurrent load from wrk (Debian's package, installed
#    when missing): GET /v1/churn/users/{random user}, /v1/retention,
#    /v1/delivery and /v1/churn/at-risk?limit=20 in turn, 2 threads, 32
#    connections, 20 s; the latency percentiles (limit: p99 under 5 ms).
#
# usage: scripts/bench-analytics.sh [QUERY_USERS]
set -euo pipefail
cd "$(dirname "$0")/.."

QUERY_USERS=${1:-1000000}
EVENTS=1000000
USERS=100000
SEED=7
DATA=target/bench/data-$EVENTS-$USERS-$SEED
WORK=target/bench/analytics
mkdir -p "$WORK"

cargo build --release --quiet
BIN=target/release/nudgeflow

if [ ! -f "$DATA/.complete" ]; then
  echo "generating $EVENTS events for $USERS users into $DATA ..."
  rm -rf "$DATA"
  "$BIN" gen --events "$EVENTS" --users "$USERS" --seed "$SEED" --out "$DATA" > /dev/null
  touch "$DATA/.complete"
fi

# The shipped spec, and the same without its [analytics] tables.
ON=dataflows/ecommerce.toml
OFF=$WORK/ecommerce-no-analytics.toml
awk '/^\[analytics/ {skip = 1; next} /^\[/ {skip = 0} !skip' "$ON" > "$OFF"
"$BIN" check "$OFF" > /dev/null

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
: > "$WORK/on.times"; : > "$WORK/off.times"; : > "$WORK/on.peak"; : > "$WORK/off.peak"
for run in 1 2 3; do
  for mode in off on; do
    spec=$ON; [ "$mode" = off ] && spec=$OFF
    stats=$(/usr/bin/time -f "%e %M" "$BIN" replay --spec "$spec" --fixture "$DATA" --out "$WORK/out-$mode" -q -w 2 2>&1 >/dev/null | tail -1)
    echo "${stats% *}" >> "$WORK/$mode.times"
    echo "${stats#* }" >> "$WORK/$mode.peak"
  done
done
on=$(median < "$WORK/on.times"); off=$(median < "$WORK/off.times")
on_kb=$(median < "$WORK/on.peak"); off_kb=$(median < "$WORK/off.peak")
active=$(wc -l < "$WORK/out-on/churn.jsonl")
echo "1M events, 100k users, 2 workers, ecommerce.toml, median of 3 alternating runs:"
awk -v on="$on" -v off="$off" -v ev="$EVENTS" 'BEGIN {
  cost = 1 - off / on
  printf "  analytics off %.0f events/s (%.2f s), on %.0f events/s (%.2f s): analytics costs %.1f%% of throughput (limit 20%%) %s\n",
    ev / off, off, ev / on, on, 100 * cost, (cost <= 0.20 ? "ok" : "OVER") }'
awk -v a="$on_kb" -v b="$off_kb" -v users="$active" 'BEGIN {
  printf "  peak memory off %.0f MiB, on %.0f MiB: %.0f B more per active user (%d users with activity)\n",
    b / 1024, a / 1024, (a - b) * 1024 / users, users }'

# Queries under load, 1M users.
QDATA=target/bench/retention-$QUERY_USERS
if [ ! -f "$QDATA/.complete" ]; then
  echo "generating retention data for $QUERY_USERS users into $QDATA ..."
  rm -rf "$QDATA"
  "$BIN" gen retention --users "$QUERY_USERS" --weeks 3 --cohorts 2 --uplift 0.05 --out "$QDATA" > /dev/null
  touch "$QDATA/.complete"
fi
# A churn model, so that the churn routes answer.
QSPEC=$WORK/retention-churn.toml
cat "$QDATA/spec.toml" - > "$QSPEC" <<'EOF'

[analytics.churn]
r = 0.243
alpha = 4.414
a = 0.793
b = 2.426
unit = "week"
threshold = 0.5
EOF
command -v wrk > /dev/null || {
  echo "installing wrk (Debian) ..."
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk > /dev/null; else sudo apt-get install -y -qq wrk > /dev/null; fi
}
PORT=19464
"$BIN" replay --spec "$QSPEC" --fixture "$QDATA" --out "$WORK/out-query" -q --serve "127.0.0.1:$PORT" 2> "$WORK/serve.log" &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true' EXIT
until grep -q serving "$WORK/serve.log" 2> /dev/null; do
  kill -0 $SERVER 2> /dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 0.5
done
users=$(wc -l < "$WORK/out-query/churn.jsonl")
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")
echo "$QUERY_USERS users ($users active), served by replay --serve (RSS $((rss_kb / 1024)) MiB):"
# Warm the at-risk list (computed once per as-of time).
curl -s "http://127.0.0.1:$PORT/v1/churn/at-risk?limit=20" > /dev/null
cat > "$WORK/queries.lua" <<EOF
local n = 0
request = function()
  n = n + 1
  local k = n % 4
  if k == 0 then return wrk.format("GET", "/v1/retention") end
  if k == 1 then return wrk.format("GET", "/v1/delivery") end
  if k == 2 then return wrk.format("GET", "/v1/churn/at-risk?limit=20") end
  return wrk.format("GET", "/v1/churn/users/u-" .. math.random(0, $QUERY_USERS - 1))
end
EOF
wrk -t2 -c32 -d20s --latency -s "$WORK/queries.lua" "http://127.0.0.1:$PORT" > "$WORK/wrk.txt"
awk '/Requests\/sec/ {rps = $2} /^ +99%/ {p99 = $2} /^ +50%/ {p50 = $2} /^ +90%/ {p90 = $2}
  END {
    v = p99; ms = (v ~ /us$/) ? v / 1000 : (v ~ /ms$/) ? v + 0 : v * 1000
    printf "  %s requests/s; latency p50 %s, p90 %s, p99 %s (limit p99 < 5 ms) %s\n", rps, p50, p90, p99, (ms < 5 ? "ok" : "OVER")
  }' "$WORK/wrk.txt"
grep -E 'Non-2xx|Socket errors' "$WORK/wrk.txt" || true
