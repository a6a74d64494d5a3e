#!/usr/bin/env bash
# The whole pipeline on the bundled example: generates a capture of a few
# calls (examples/make_capture.rs, deterministic), replays it with the
# annotated conf/callrec.toml (replay puts the spool under --out), and
# leaves recordings, metadata, the call history and the announcements that
# were played under ./out/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --examples --bins
out=out/demo
rm -rf "$out"; mkdir -p "$out"
target/release/examples/make_capture --demo "$out/demo.pcap"
target/release/callrec check-config --config conf/callrec.toml
target/release/callrec replay --config conf/callrec.toml --out "$out/spool" "$out/demo.pcap"
target/release/callrec calls --spool "$out/spool"
echo
echo "Recordings:"
find "$out/spool/queue" -name '*.wav' -o -name '*.json' | sort
