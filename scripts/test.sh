#!/usr/bin/env bash
# The whole test suite: unit tests, golden fixtures, property tests,
# determinism across workers and processes, and the cross-check against the
# independent Python oracle (scripts/oracle.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo test --all-targets "$@"
