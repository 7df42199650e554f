#!/usr/bin/env bash
# Analytics benchmark (DESIGN.md §5, §8), each figure printed beside the
# limit it is held to, all measured in this run:
#
# 1. cost: the 1M-event benchmark input (scripts/bench.sh's, 100k users)
#    replayed with dataflows/core.toml and with the same spec plus the
#    [analytics] tables dataflows/ecommerce.toml ships (activity: orders;
#    churn; retention, churn state, delivery counts, the view, and
#    retention.json, delivery.json and churn.jsonl written), alternately,
#    5 runs each: the same decisions, so the difference is the analytics.
#    The medians' throughput ratio (limit: analytics costs at most 20%),
#    the extra CPU time, and the extra peak memory per active user. Then
#    the same with a broad activity (page views, logins, payments,
#    searches too: six events in ten count), a stress case.
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

# core.toml, and core.toml with analytics: as ecommerce.toml ships them
# (orders are activity), and with a broad activity.
OFF=dataflows/core.toml
ORDERS=$WORK/core-orders.toml
BROAD=$WORK/core-broad.toml
{ cat "$OFF"; echo; awk '/^\[analytics/ {keep = 1} /^\[\[/ {keep = 0} keep' dataflows/ecommerce.toml; } > "$ORDERS"
sed 's/^activity = .*/activity = ["order.placed", "payment.succeeded", "login.*", "page.viewed", "feature.used", "search.performed"]/' "$ORDERS" > "$BROAD"
"$BIN" check "$ORDERS" "$BROAD" > /dev/null

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
# cost NAME SPEC: 5 runs of the spec alternating with 5 of core.toml.
cost() {
  local name=$1 on=$2
  : > "$WORK/on.wall"; : > "$WORK/off.wall"; : > "$WORK/on.cpu"; : > "$WORK/off.cpu"; : > "$WORK/on.peak"; : > "$WORK/off.peak"
  for run in 1 2 3 4 5; do
    for mode in off on; do
      spec=$on; [ "$mode" = off ] && spec=$OFF
      read -r wall peak user sys <<< "$(/usr/bin/time -f "%e %M %U %S" "$BIN" replay --spec "$spec" --fixture "$DATA" --out "$WORK/out-$mode" -q -w 2 2>&1 >/dev/null | tail -1)"
      echo "$wall" >> "$WORK/$mode.wall"
      awk "BEGIN {print $user + $sys}" >> "$WORK/$mode.cpu"
      echo "$peak" >> "$WORK/$mode.peak"
    done
  done
  cmp -s "$WORK/out-on/dispatches.jsonl" "$WORK/out-off/dispatches.jsonl" || { echo "the decisions differ"; exit 1; }
  local on_wall off_wall on_cpu off_cpu on_kb off_kb active
  on_wall=$(median < "$WORK/on.wall"); off_wall=$(median < "$WORK/off.wall")
  on_cpu=$(median < "$WORK/on.cpu"); off_cpu=$(median < "$WORK/off.cpu")
  on_kb=$(median < "$WORK/on.peak"); off_kb=$(median < "$WORK/off.peak")
  active=$(wc -l < "$WORK/out-on/churn.jsonl")
  awk -v name="$name" -v on="$on_wall" -v off="$off_wall" -v onc="$on_cpu" -v offc="$off_cpu" -v ev="$EVENTS" 'BEGIN {
    cost = 1 - off / on
    printf "  %s: off %.0f events/s (%.2f s), on %.0f events/s (%.2f s): analytics costs %.1f%% of throughput (limit 20%%) %s; CPU %.2f s against %.2f s (+%.0f%%)\n",
      name, ev / off, off, ev / on, on, 100 * cost, (cost <= 0.20 ? "ok" : "OVER"), onc, offc, 100 * (onc / offc - 1) }'
  awk -v a="$on_kb" -v b="$off_kb" -v users="$active" 'BEGIN {
    printf "    peak memory off %.0f MiB, on %.0f MiB: %.0f B more per active user (%d users with activity)\n",
      b / 1024, a / 1024, (a - b) * 1024 / users, users }'
}
echo "1M events, 100k users, 2 workers, core.toml without and with analytics, medians of 5 alternating runs:"
cost "orders are activity (as shipped)" "$ORDERS"
cost "broad activity (stress)" "$BROAD"

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
