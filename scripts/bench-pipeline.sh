#!/usr/bin/env bash
# Whole-pipeline benchmark: CALLS concurrent recorded calls of SECONDS each
# (default 500 x 30 s, about 1.5 M packets), replayed end to end (decode,
# signalling, jitter buffer, mixing, WAV on disk). Prints packets/s, CPU µs
# per packet, peak memory and memory per active call, then runs tshark over
# the same capture (RTP stream analysis) and prints the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-500}; secs=${2:-30}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cargo build --release --quiet --bins --examples
target/release/examples/make_capture --bench "$calls" "$secs" "$work/bench.pcap"
sed -e "s|^spool_dir = .*|spool_dir = \"$work/spool\"|" -e 's|^mode = "pcap"|mode = "off"|' conf/callrec.toml > "$work/bench.toml"
sed -i "s|^dir = \"../guidance-audio\"|dir = \"$PWD/guidance-audio\"|" "$work/bench.toml"
packets=$(capinfos -c -M "$work/bench.pcap" 2>/dev/null | awk '/Number of packets/ {print $NF}')
/usr/bin/time -f '%e %U %S %M' -o "$work/time" \
  target/release/callrec replay --config "$work/bench.toml" --out "$work/spool" "$work/bench.pcap" > "$work/out" 2>/dev/null
read -r wall user sys maxkb < "$work/time"
wavs=$(find "$work/spool/queue" -name '*.wav' | wc -l)
awk -v p="$packets" -v w="$wall" -v u="$user" -v s="$sys" -v m="$maxkb" -v c="$calls" -v n="$wavs" 'BEGIN {
  printf "callrec: %d packets, %d calls (%d recordings) in %.2f s wall: %.0f packets/s, %.3f CPU us/packet\n", p, c, n, w, p / w, (u + s) * 1e6 / p;
  printf "callrec: per core: %.0f packets per CPU-second (user %.2f s + sys %.2f s); target 2000000\n", p / (u + s), u, s;
  printf "callrec: peak RSS %.1f MiB, %.1f KiB per active call (whole process / calls)\n", m / 1024, m / c }'
if command -v tshark >/dev/null; then
  /usr/bin/time -f '%e' -o "$work/ttime" tshark -r "$work/bench.pcap" -q -o rtp.heuristic_rtp:TRUE -z rtp,streams > /dev/null 2>&1 || true
  tw=$(cat "$work/ttime" | tail -1)
  awk -v p="$packets" -v w="$wall" -v t="$tw" 'BEGIN {
    printf "tshark -z rtp,streams on the same capture: %.2f s (%.0f packets/s); callrec is %.1fx faster\n", t, p / t, t / w }'
fi
