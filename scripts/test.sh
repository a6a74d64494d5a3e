#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every check and test: formatting,
# clippy, cargo-deny, the Debian package (built here with cargo deb, a
# release build, and installed into a clean root by tests/package.rs),
# then unit, integration and property tests with real peers (sshd,
# tshark, SIPp, promtool, systemd-analyze). Benchmarks are only compiled
# here; run them with `cargo bench` (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Licences, bans and sources always; advisories need the RustSec database,
# which is fetched with git from GitHub: where it cannot be reached, say so.
cargo deny --log-level error check licenses bans sources
if adv=$(cargo deny --log-level error check advisories 2>&1); then
  echo "cargo deny advisories: ok"
elif grep -q "failed to fetch advisory database" <<<"$adv"; then
  echo "cargo deny advisories: NOT CHECKED (the RustSec advisory database cannot be fetched from this network)"
else
  echo "$adv"; exit 1
fi
cargo deb --quiet
cargo check --benches --quiet
cargo test --workspace --lib --bins --tests --examples --no-fail-fast -- --test-threads=2
