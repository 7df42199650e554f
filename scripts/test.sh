#!/usr/bin/env bash
# The whole test suite: unit tests, golden fixtures, property tests,
# determinism across workers and processes, the cross-check against the
# independent Python oracle (scripts/oracle.py), and the live job against a
# real Kafka-compatible broker (Tansu, installed here when missing: about
# 10-15 minutes once, then cached in ~/.cache/nudgeflow), and the report
# page in headless Chromium (Debian's package, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
scripts/kafka-up.sh --install-only
scripts/install-chromium.sh
cargo test --all-targets "$@"
