#!/usr/bin/env bash
# Inline mode through the kernel: phone A sends RTP as fast as it can over
# FLOWS flows across the bridge; callrec's inline worker (examples/
# inline_bench.rs) diverts them through NFQUEUE and rewrites them; phone B
# counts what arrives. Run twice: with every flow in a prompt (the packets
# per second the inline path can rewrite) and with none (flows outside a
# prompt: the nft counters show that none reaches callrec).
# usage: scripts/bench-inline.sh [SECS] [FLOWS]   (root; builds --release)
set -euo pipefail
secs=${1:-5} flows=${2:-100}
cd "$(dirname "$0")/.."
cargo build -q --release --example inline_bench
bin=target/release/examples/inline_bench
t=bi$$
trap 'tests/phones/lab.sh down $t' EXIT
tests/phones/lab.sh up $t
for mode in divert none; do
  echo "== $mode"
  ip netns exec $t-br $bin worker $((secs + 2)) "$flows" $mode > /tmp/$t-worker.txt &
  w=$!
  sleep 1
  ip netns exec $t-b $bin recv $((secs + 1)) "$flows" > /tmp/$t-recv.txt &
  r=$!
  sleep 0.3
  ip netns exec $t-a $bin send "$secs" "$flows"
  wait $r; wait $w
  cat /tmp/$t-recv.txt
  grep -E "second|total" /tmp/$t-worker.txt
  ip netns exec $t-br nft list table ip callrec | grep -E "counter" | sed 's/^\s*/nft: /'
  ip netns exec $t-br nft reset counters table ip callrec > /dev/null 2>&1 || true
done
rm -f /tmp/$t-*.txt
