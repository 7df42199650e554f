#!/usr/bin/env bash
# The live job's benchmark, on one local Tansu broker (memory engine), each
# figure printed beside the limit it is compared with, measured in the same
# run:
#  (i)  throughput: `nudgeflow run` (ecommerce.toml, WORKERS workers)
#       draining a preloaded generated fixture (all streams; default 1M
#       events for 100k users, as scripts/bench.sh) until its last output is
#       acknowledged, beside a bare rdkafka consume -> produce -> commit
#       passthrough of the same records (examples/kafka_bench.rs).
#       Floor: at least 50% of the passthrough's records/s.
#  (ii) latency: open-loop load at RATE events/s (default 20000) for
#       SECONDS, a rule without delay; from each event's acknowledgement by
#       the broker (its append) to its dispatch being read back, beside the
#       passthrough's append -> copy read back at the same rate. Floor: p99
#       within 10 ms of the passthrough's p99.
# Every client fetches with fetch.wait.max.ms = 10.
#
# usage: scripts/bench-kafka.sh [EVENTS] [USERS] [WORKERS] [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:-1000000}
USERS=${2:-100000}
WORKERS=${3:-2}
RATE=${4:-20000}
SECONDS_=${5:-20}
SEED=7
DATA=target/bench/data-$EVENTS-$USERS-$SEED
WORK=target/bench/kafka
rm -rf "$WORK"; mkdir -p "$WORK"

cargo build --release --quiet --bin nudgeflow --example kafka_bench
BIN=target/release/nudgeflow
TOOL=target/release/examples/kafka_bench

if [ ! -f "$DATA/.complete" ]; then
  echo "generating $EVENTS events for $USERS users into $DATA ..."
  rm -rf "$DATA"
  "$BIN" gen --events "$EVENTS" --users "$USERS" --seed "$SEED" --out "$DATA"
  touch "$DATA/.complete"
fi
records=$(cat "$DATA"/*.jsonl | grep -c .)
"$BIN" replay --spec dataflows/ecommerce.toml --fixture "$DATA" --out "$WORK/replay" -q -w "$WORKERS" >/dev/null
outputs=$(cat "$WORK/replay"/{dispatches,suppressions,dead_letters}.jsonl | wc -l)
echo "input: $records records ($EVENTS events, $USERS users); the replay decides $outputs outputs; $WORKERS workers; $(nproc) cores"

topics() { for t in events preferences consent receipts erasures dispatches suppressions dead-letters churn-signals; do printf '%s.%s,' "$1" "$t"; done; }
eval "$(scripts/kafka-up.sh --engine memory --dir "$WORK/broker" --partitions "$WORKERS" \
  --topics "$(topics j)$(topics l)pt.out,lp.in,lp.out")"
trap 'kill $(jobs -p) 2>/dev/null || true; scripts/kafka-down.sh "$KAFKA_DIR" >/dev/null 2>&1 || true' EXIT

# A job config on this broker: its topics start with $2, its spec is $3.
job() {
  cat >"$WORK/$1.toml" <<TOML
spec = "$3"
[kafka]
brokers = "$KAFKA_BROKERS"
group = "$1"
properties = { "fetch.wait.max.ms" = 10 }
[topics]
events = "$2.events"
preferences = "$2.preferences"
consent = "$2.consent"
receipts = "$2.receipts"
erasures = "$2.erasures"
dispatches = "$2.dispatches"
suppressions = "$2.suppressions"
dead_letters = "$2.dead-letters"
churn_signals = "$2.churn-signals"
[http]
listen = "127.0.0.1:0"
TOML
}
job throughput j "$PWD/dataflows/ecommerce.toml"
cat >"$WORK/ping.toml" <<'TOML'
# One rule without delay: every bench.ping event is dispatched on push.
[[rule]]
name = "ping"
on = "bench.ping"
purpose = "transactional"
channels = ["push"]
TOML
job latency l "$PWD/$WORK/ping.toml"

echo "preloading the fixture ..."
"$BIN" produce --config "$WORK/throughput.toml" --fixture "$DATA"

echo
echo "(i) throughput, draining $records preloaded records"
# Done when the job's own metrics count every output acknowledged (a
# consumer reading the outputs back from Tansu's memory engine can miss
# records, see the README's notes on Tansu).
http_addr() {
  for _ in $(seq 1 300); do
    a=$(sed -n 's/^nudgeflow: http on //p' "$1")
    [ -n "$a" ] && { echo "$a"; return; }
    sleep 0.02
  done
  echo "no HTTP address in $1" >&2; exit 1
}
acked_outputs() {
  curl -sf "http://$1/metrics" | awk '/^nudgeflow_records_out_total/ { n += $2 } END { print n + 0 }'
}
start=$(date +%s.%N)
NUDGEFLOW_LOG=warn "$BIN" run --config "$WORK/throughput.toml" -w "$WORKERS" 2>"$WORK/run-throughput.log" &
runner=$!
addr=$(http_addr "$WORK/run-throughput.log")
last=0
until [ "$(acked_outputs "$addr")" -ge "$outputs" ]; do
  sleep 0.05
  now=$(date +%s)
  if [ $((now - ${last:-0})) -ge 5 ]; then last=$now; echo "  $(acked_outputs "$addr") of $outputs outputs acknowledged" >&2; fi
done
job_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
kill -TERM "$runner"; wait "$runner" || true
pass=$("$TOOL" passthrough "$KAFKA_BROKERS" pt j.events,j.preferences,j.consent,j.receipts,j.erasures pt.out "$records")
pass_s=$(echo "$pass" | awk '{print $4}')
awk -v r="$records" -v js="$job_s" -v ps="$pass_s" 'BEGIN {
  job = r / js; pass = r / ps
  printf "  nudgeflow run   %9.0f records/s  (%.2f s from start to the last output acknowledged)\n", job, js
  printf "  passthrough     %9.0f records/s  (%.2f s)   <- the limit\n", pass, ps
  printf "  ratio           %9.0f%%            floor 50%%: %s\n", 100 * job / pass, (job >= 0.5 * pass) ? "met" : "NOT MET" }'

echo
echo "(ii) latency at $RATE events/s for $SECONDS_ s (append -> output read back)"
NUDGEFLOW_LOG=warn "$BIN" run --config "$WORK/latency.toml" -w "$WORKERS" 2>"$WORK/run-latency.log" &
runner=$!
addr=$(http_addr "$WORK/run-latency.log")
until curl -sf "http://$addr/readyz" >/dev/null; do sleep 0.1; done
job_l=$("$TOOL" load "$KAFKA_BROKERS" l.events l.dispatches "$RATE" "$SECONDS_")
metrics=$(curl -sf "http://$addr/metrics" || true)
kill -TERM "$runner"; wait "$runner" || true
total=$(awk "BEGIN{printf \"%d\", $RATE * $SECONDS_}")
"$TOOL" passthrough "$KAFKA_BROKERS" lp lp.in lp.out "$total" >/dev/null &
passer=$!
pass_l=$("$TOOL" load "$KAFKA_BROKERS" lp.in lp.out "$RATE" "$SECONDS_")
wait "$passer"
echo "  nudgeflow run   $job_l"
echo "  passthrough     $pass_l   <- the limit"
p99() { echo "$1" | sed -n 's/.* p99 \([0-9.]*\) ms.*/\1/p'; }
awk -v j="$(p99 "$job_l")" -v p="$(p99 "$pass_l")" 'BEGIN {
  printf "  p99 difference  %.2f ms                floor 10 ms: %s\n", j - p, (j - p <= 10) ? "met" : "NOT MET" }'
echo "  the job's own histogram (decision time -> acknowledgement), from /metrics:"
echo "$metrics" | grep -E '^nudgeflow_end_to_end_latency_seconds_(count|sum)|le="0.0(01|02|04|08|16)"' | sed 's/^/    /' || true
