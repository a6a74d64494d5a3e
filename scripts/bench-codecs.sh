#!/usr/bin/env bash
# Whole-pipeline benchmark per codec: CALLS concurrent recorded calls of
# SECONDS each (default 200 x 30 s) replayed end to end, once with G.711
# (the reference), once with G.722 and once with AMR-WB (octet-aligned),
# both recorded at 16 kHz (contract sample_rate "auto"), stereo PCM16.
# The G.722 and AMR-WB audio come from independent encoders (ffmpeg;
# libvo-amrwbenc through tests/support/encoders.py) and are cycled through
# every packet (examples/make_codec_capture.rs). Prints, per codec,
# packets/s, CPU µs per packet and the CPU ratio to G.711 (median of RUNS).
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-200}; secs=${2:-30}; runs=${3:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet --bins --examples
ffmpeg -hide_banner -loglevel error -nostdin -f lavfi -i "sine=frequency=440:sample_rate=16000:duration=10" \
  -ac 1 -ar 16000 -c:a g722 -f g722 "$work/g722.raw"
sox -n -r 16000 -b 16 -c 1 -e signed-integer -L "$work/tone16.raw" synth 10 sine 440 vol 0.5
python3 tests/support/encoders.py amrwb "$work/tone16.raw" "$work/tone.awb"
target/release/examples/make_capture --bench "$calls" "$secs" "$work/g711.pcap"
target/release/examples/make_codec_capture g722 "$calls" "$secs" "$work/g722.raw" "$work/g722.pcap"
target/release/examples/make_codec_capture amrwb "$calls" "$secs" "$work/tone.awb" "$work/amrwb.pcap"
sed -e 's|^mode = "pcap"|mode = "off"|' -e 's|^format = .*|format = "pcm16"|' \
    -e 's|^channels = .*|channels = "stereo"|' -e "s|^dir = \"../guidance-audio\"|dir = \"$PWD/guidance-audio\"|" \
    conf/callrec.toml > "$work/bench.toml"
base=""
for codec in g711 g722 amrwb; do
  pcap="$work/$codec.pcap"
  packets=$(capinfos -c -M "$pcap" 2>/dev/null | awk '/Number of packets/ {print $NF}')
  : > "$work/times"
  for _ in $(seq "$runs"); do
    rm -rf "$work/spool"; sync
    /usr/bin/time -f '%e %U %S' -a -o "$work/times" \
      target/release/callrec replay --config "$work/bench.toml" --out "$work/spool" "$pcap" > /dev/null 2>&1
  done
  rate=$(find "$work/spool/queue" -name '*.json' -print -quit | xargs grep -o '"sample_rate": *[0-9]*' | cut -d: -f2 | tr -d ' ')
  read -r wall user sys < <(awk '{print $2 + $3, $0}' "$work/times" | sort -n | awk -v m=$(( (runs + 1) / 2 )) 'NR == m {print $2, $3, $4}')
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')
  [ -z "$base" ] && base=$cpu
  awk -v c="$codec" -v p="$packets" -v w="$wall" -v cpu="$cpu" -v b="$base" -v r="$rate" -v n="$runs" 'BEGIN {
    printf "%-6s (%s Hz recording, median of %d): %d packets in %.2f s wall, %.0f packets/s, %.3f CPU us/packet, CPU %.2fx G.711\n",
      c, r, n, p, w, p / w, cpu * 1e6 / p, cpu / b }'
done
