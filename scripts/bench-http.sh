#!/usr/bin/env bash
# The HTTP sink's benchmark (examples/http_sink_bench.rs): the webhook sink
# against a fast local provider (an axum server answering 200 at once),
# beside a bare reqwest client loop with the same concurrency against the
# same server, which is the limit. Both keep CONCURRENCY requests
# outstanding until REQUESTS are answered; they alternate for ROUNDS rounds
# after a warm-up. Prints requests/s and latency p50/p99/p99.9 of each
# round. Floor: the sink's best rate at least 80% of the bare loop's best
# (the script fails below it).
#
# usage: scripts/bench-http.sh [REQUESTS] [CONCURRENCY] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-100000}
CONCURRENCY=${2:-64}
ROUNDS=${3:-3}
cargo build --release --quiet --example http_sink_bench
"${CARGO_TARGET_DIR:-target}"/release/examples/http_sink_bench "$REQUESTS" "$CONCURRENCY" "$ROUNDS"
