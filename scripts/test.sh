#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every test (unit, integration,
# property tests, real sshd/tshark peers). Benchmarks are only compiled
# here; run them with `cargo bench` (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo check --benches --quiet
cargo test --lib --bins --tests --examples --no-fail-fast -- --test-threads=2
