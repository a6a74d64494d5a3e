#!/usr/bin/env bash
# Whole-pipeline benchmark: CALLS concurrent recorded calls of SECONDS each
# (default 500 x 30 s, about 1.5 M packets), replayed end to end (decode,
# signalling, jitter buffer, mixing, WAV on disk with fsync, SHA-256,
# metadata, spool). Prints packets/s, CPU µs per packet, packets per
# CPU-second, peak memory and memory per active call for two recording
# formats (the heaviest, stereo PCM16, and the lightest, mono μ-law), the
# median of RUNS runs each, then runs tshark over the same capture (RTP
# stream analysis) and prints the ratio. After each format it prints the
# output floor: what writing, fsyncing and hashing the same files costs
# with no recorder at all (examples/output_floor.rs).
#
# The spool is a freshly made ext4 filesystem (a loop device) when run as
# root, as on an appliance whose spool has its own partition; otherwise a
# directory under $TMPDIR, whose filesystem's history (many recently
# deleted inodes make ext4's inode allocation slow) shows in the figures.
# TMPFS=1 puts the spool on a fresh tmpfs instead (made anew for each
# run, when root): no block device, so the figures show the CPU the
# pipeline itself spends (issue 17 asks for tmpfs figures).
# Binaries come from $CARGO_TARGET_DIR when it is set; CALLREC=path runs
# that callrec binary instead of the one just built (an older build, for
# before-and-after figures on the same capture and machine).
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-500}; secs=${2:-30}; runs=${3:-3}
work=$(mktemp -d)
mnt=""
cleanup() { [ -n "$mnt" ] && umount "$mnt" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cargo build --release --quiet --bins --examples
bin=${CARGO_TARGET_DIR:-target}/release
callrec=${CALLREC:-$bin/callrec}
"$bin"/examples/make_capture --bench "$calls" "$secs" "$work/bench.pcap"
spool_fs="$work (the filesystem of \$TMPDIR)"
spool_root="$work"
# A new ext4 filesystem on a loop device, initialised at once (lazy
# inode-table zeroing would run during the measurement).
new_fs() {
  [ -n "$mnt" ] && { umount "$mnt" || return 1; }
  if [ "${TMPFS:-0}" = 1 ]; then
    mkdir -p "$work/mnt" && mount -t tmpfs -o size=4g,mode=0700 callrec-bench "$work/mnt" && mnt="$work/mnt"
    return
  fi
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/spool.img" \
    && mkdir -p "$work/mnt" && mount -o loop "$work/spool.img" "$work/mnt" && mnt="$work/mnt"
}
if [ "$(id -u)" = 0 ] && [ "${TMPFS:-0}" = 1 ] && new_fs; then
  spool_root="$mnt"
  spool_fs="a fresh 4 GiB tmpfs, made anew for each run"
elif [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && truncate -s 4G "$work/spool.img" && new_fs; then
  spool_root="$mnt"
  spool_fs="a fresh 4 GiB ext4 filesystem on a loop device, made anew for each run"
fi
# Each run starts from the same state: a new filesystem where one can be
# made (deleting the last run's files would leave ext4 slower to allocate).
fresh_spool() {
  if [ -n "$mnt" ]; then new_fs; else rm -rf "$spool_root/spool"; fi
  sync; sleep 1
}
echo "spool: $spool_fs"
echo "callrec: $callrec"
packets=$(capinfos -c -M "$work/bench.pcap" 2>/dev/null | awk '/Number of packets/ {print $NF}')
# The process with no call at all (a capture of just its file header):
# mostly the shared libraries' pages (FFmpeg and the rest, shared with
# every other process using them), which do not grow with calls.
head -c 24 "$work/bench.pcap" > "$work/empty.pcap"
# Issue 17's targets, packets per CPU-second: 1,000,000 in stereo PCM16
# and 1,500,000 in mono μ-law (at most 0.5 µs of user space a packet).
for variant in "stereo pcm16 1000000" "mono ulaw 1500000"; do
  set -- $variant
  target=$3; variant="$1 $2"
  sed -e 's|^mode = "pcap"|mode = "off"|' -e "s|^format = .*|format = \"$2\"|" \
      -e "s|^channels = .*|channels = \"$1\"|" -e "s|^dir = \"../guidance-audio\"|dir = \"$PWD/guidance-audio\"|" \
      conf/callrec.toml > "$work/bench.toml"
  fresh_spool
  /usr/bin/time -f '%M' -o "$work/idle" "$callrec" replay --config "$work/bench.toml" --out "$spool_root/spool" "$work/empty.pcap" > /dev/null 2>&1
  idlekb=$(tail -1 "$work/idle")
  : > "$work/times"
  for _ in $(seq "$runs"); do
    fresh_spool
    /usr/bin/time -f '%e %U %S %M' -a -o "$work/times" \
      "$callrec" replay --config "$work/bench.toml" --out "$spool_root/spool" "$work/bench.pcap" > "$work/out" 2>/dev/null
  done
  wavs=$(find "$spool_root/spool/queue" -name '*.wav' | wc -l)
  wav_bytes=$(find "$spool_root/spool/queue" -name '*.wav' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  # The run with the median CPU time.
  read -r wall user sys maxkb < <(awk '{print $2 + $3, $0}' "$work/times" | sort -n | awk -v m=$(( (runs + 1) / 2 )) 'NR == m {print $2, $3, $4, $5}')
  echo "$wall" > "$work/wall.$2"
  awk -v p="$packets" -v w="$wall" -v u="$user" -v s="$sys" -v m="$maxkb" -v c="$calls" -v n="$wavs" -v v="$variant" -v r="$runs" -v t="$target" -v i="$idlekb" 'BEGIN {
    printf "callrec (%s, median of %d): %d packets, %d calls (%d recordings) in %.2f s wall: %.0f packets/s, %.3f CPU us/packet\n", v, r, p, c, n, w, p / w, (u + s) * 1e6 / p;
    printf "  per core: %.0f packets per CPU-second (user %.2f s + sys %.2f s); target %d\n", p / (u + s), u, s, t;
    printf "  peak RSS %.1f MiB, %.1f KiB per active call (whole process / calls)\n", m / 1024, m / c;
    printf "  with no call the same process peaks at %.1f MiB: %.1f KiB per active call above that (target 64)\n", i / 1024, (m - i) / c }'
  # The floor under these figures: the same files written, fsynced,
  # renamed and hashed with nothing else (examples/output_floor.rs), on
  # the same kind of filesystem. No recorder can spend less than this.
  : > "$work/floor"
  for _ in $(seq "$runs"); do
    fresh_spool
    "$bin"/examples/output_floor "$spool_root/floor" "$wavs" $(( wav_bytes / (wavs > 0 ? wavs : 1) )) >> "$work/floor"
    rm -rf "$spool_root/floor"
  done
  read -r fbytes fu fs < <(awk '{print $3 + $4, $0}' "$work/floor" | sort -n | awk -v m=$(( (runs + 1) / 2 )) 'NR == m {print $3, $4, $5}')
  awk -v p="$packets" -v b="$fbytes" -v u="$fu" -v s="$fs" -v n="$wavs" -v t="$target" 'BEGIN {
    budget = p / t;
    printf "  output floor: writing, fsyncing and hashing the same %d files (%.0f MB) and nothing else takes %.2f CPU s (user %.2f + sys %.2f);\n", n, b / 1e6, u + s, u, s;
    printf "    the %d packets per CPU-second target allows %.2f CPU s for everything (%.0f%% of it spent by the floor)\n", t, budget, 100 * (u + s) / budget }'
done
if command -v tshark >/dev/null; then
  /usr/bin/time -f '%e' -o "$work/ttime" tshark -r "$work/bench.pcap" -q -o rtp.heuristic_rtp:TRUE -z rtp,streams > /dev/null 2>&1 || true
  tw=$(tail -1 "$work/ttime")
  for f in pcm16 ulaw; do
    awk -v p="$packets" -v w="$(cat "$work/wall.$f")" -v t="$tw" -v f="$f" 'BEGIN {
      printf "tshark -z rtp,streams on the same capture: %.2f s (%.0f packets/s); callrec (%s) is %.1fx faster\n", t, p / t, f, t / w }'
  done
fi
