#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every test (unit, integration,
# property tests, real sshd/tshark/SIPp peers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --all-targets --no-fail-fast -- --test-threads=2
