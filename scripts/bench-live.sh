#!/usr/bin/env bash
# Live-capture benchmark: CALLS concurrent recorded calls of SECONDS each
# (default 500 x 30 s, about 1.5 M packets) played by tcpreplay into
# `callrec run` at each rate of RATES (packets per second; "top" for
# tcpreplay --topspeed), with the shipped configuration (conf/callrec.toml:
# default snap length, ring and buffers), only the interface, spool and
# control socket changed. The daemon captures on one end of a veth pair in
# a network namespace made here; tcpreplay sends on the other end. For
# each rate it prints the packets sent, the packets the daemon counted,
# what was dropped (kernel ring, interface, shard rings) and the
# recordings made, against the calls in the capture.
#
#   scripts/bench-live.sh [CALLS] [SECONDS] ["RATE RATE ..."]   (root)
#   SNAPLEN=65535 scripts/bench-live.sh ...   the same with another snap length
#   FILTER=none scripts/bench-live.sh ...     the same with another capture.filter
#   BLOCK=1ms scripts/bench-live.sh ...      with capture.block_timeout (TPACKET_V3 blocks)
#   TMPFS=1 scripts/bench-live.sh ...         the spool on a tmpfs (the media path without disk)
#   THREADS=2 scripts/bench-live.sh ...       with capture.threads = 2 (PACKET_FANOUT):
#                                             q_drop is what their queues dropped,
#                                             per_thread the frames each thread read
# After the table, the CPU time of the daemon's threads per packet counted
# (ns, user + system, from /proc): the engine's thread (callrec-capture),
# the fanout's capture threads (callrec-capN) and the shard workers; "all"
# is every thread of the daemon, and pps/cpu the packets it handles per
# CPU-second at that cost (tcpreplay's own CPU is not in it).
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-500}; secs=${2:-30}; rates=${3:-"100000"}
[ "$(id -u)" = 0 ] || { echo "bench-live.sh: needs root (network namespace, capture)" >&2; exit 2; }
work=$(mktemp -d)
ns="crbench-$$"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  [ -n "${pid:-}" ] && wait "$pid" 2>/dev/null || true
  mountpoint -q "$work/spool" 2>/dev/null && umount "$work/spool"
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release --quiet --bins --examples
target/release/examples/make_capture --bench "$calls" "$secs" "$work/bench.pcap" 2>/dev/null
ip netns add "$ns"
ip -n "$ns" link add va type veth peer name vb
ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$ns" link set va up; ip -n "$ns" link set vb up
status() { target/release/callrec status --socket "$work/control.sock" 2>/dev/null || true; }
field() { sed -n "s/.* $1 \([0-9]*\).*/\1/p" | head -1; }
printf '%-8s %8s %9s %9s %8s %8s %8s %8s %6s %10s %9s %9s  %s\n' rate sent_pps sent counted pcap_drop if_drop q_drop ring_drop cut recordings calls_rec of_calls per_thread
for rate in $rates; do
  mountpoint -q "$work/spool" && umount "$work/spool"
  rm -rf "$work/spool" "$work/control.sock"
  if [ -n "${TMPFS:-}" ]; then mkdir -p "$work/spool"; mount -t tmpfs -o size=3g,mode=0700 tmpfs "$work/spool"; fi
  sed -e "s|^interfaces = .*|interfaces = [\"va\"]${THREADS:+\\nthreads = $THREADS}|" -e 's|^mode = "pcap"|mode = "off"|' \
      -e "s|^spool_dir = .*|spool_dir = \"$work/spool\"|" \
      -e "s|^dir = \"../guidance-audio\"|dir = \"$PWD/guidance-audio\"|" \
      -e "s|^# snaplen = .*|${SNAPLEN:+snaplen = $SNAPLEN}|" -e "s|^# filter = .*|${FILTER:+filter = \"$FILTER\"}|" \
      -e "s|^# block_timeout = .*|${BLOCK:+block_timeout = \"$BLOCK\"}|" conf/callrec.toml > "$work/live.toml"
  printf '[daemon]\ncontrol_socket = "%s"\n' "$work/control.sock" >> "$work/live.toml"
  ip netns exec "$ns" target/release/callrec run --config "$work/live.toml" 2> "$work/daemon.log" &
  pid=$!
  for _ in $(seq 100); do [ -S "$work/control.sock" ] && break; sleep 0.1; done
  if [ "$rate" = top ]; then speed=(--topspeed); else speed=(--pps="$rate"); fi
  out=$(ip netns exec "$ns" tcpreplay "${speed[@]}" -i vb "$work/bench.pcap" 2>&1)
  sent=$(echo "$out" | awk '/Successful packets/ {print $NF}')
  # The rate tcpreplay reached ("Rated: ... Bps, ... Mbps, N pps").
  pps=$(echo "$out" | sed -n 's/.*Rated:.* \([0-9.]*\) pps.*/\1/p' | head -1 | cut -d. -f1)
  # Let the last calls end (their BYEs were the last packets) and the
  # counters reach the control socket (once a second).
  for _ in $(seq 60); do status | grep -q '^active recorded calls 0' && break; sleep 0.5; done
  sleep 1.5
  cpu=$(for t in /proc/"$pid"/task/*; do
           printf '%s %s\n' "$(cat "$t/comm")" "$(cut -d')' -f2 "$t/stat" | awk '{print $12 + $13}')"
         done 2>/dev/null)
  full=$(status)
  st=$(echo "$full" | grep '^capture va')
  qdrop=$(echo "$full" | sed -n 's/.*queue dropped \([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
  per_thread=$(echo "$full" | sed -n 's/.*capture thread \([0-9]*\) on va: packets \([0-9]*\).*/\2/p' | paste -sd/ -)
  kill -TERM "$pid"; wait "$pid" || true; pid=""
  recs=$(find "$work/spool/queue" -path '*/ready/*' -name '*.json' 2>/dev/null | wc -l)
  recorded_calls=$(find "$work/spool/queue" -path '*/ready/*' -name '*.json' -exec grep -ho '"call_id": *"[^"]*"' {} + 2>/dev/null | sort -u | wc -l)
  [ -n "${KEEP:-}" ] && cp -r "$work/spool" "$KEEP-$rate"
  printf '%-8s %8s %9s %9s %8s %8s %8s %8s %6s %10s %9s %9s  %s\n' "$rate" "${pps:--}" "$sent" \
    "$(echo "$st" | field packets)" "$(echo "$st" | field 'pcap')" "$(echo "$st" | field interface)" "$qdrop" \
    "$(echo "$st" | field ring)" "$(echo "$st" | sed -n 's/.*cut \([0-9]*\).*/\1/p')" "$recs" "$recorded_calls" "$calls" "${per_thread:--}"
  counted=$(echo "$st" | field packets)
  cpulines+=$(echo "$cpu" | awk -v r="$rate" -v n="$counted" -v hz="$(getconf CLK_TCK)" '
    { g = $1; sub(/[0-9]+$/, "", g); t[g] += $2 }
    END { printf "%-8s", r; all = 0
          for (g in t) if (t[g] > 0) { printf "  %s %.0f", g, t[g] * 1e9 / hz / n; all += t[g] }
          printf "  all %.0f  pps/cpu %.0f\n", all * 1e9 / hz / n, n / (all / hz) }')$'\n'
done
printf '\nCPU ns per packet counted, by thread (user + system):\n%s' "${cpulines:-}"
