#!/bin/sh
# make-guidance.sh: builds guidance1.wav .. guidance5.wav from texts.txt.
#
# Offline and idempotent: running it twice produces byte-identical files
# (no dither, no timestamps in the WAV headers), and the voice is fetched
# once into a cache outside the repository.
#
# Steps:
#   1. Fetch the HTS voice "Mei" (mei_normal.htsvoice, CC BY 3.0, MMDAgent
#      Project Team / Nagoya Institute of Technology) from the PyPI wheel of
#      pyopenjtalk-plus (pinned version), and check its SHA-256.
#   2. Synthesise each line N of texts.txt with Open JTalk (Debian packages
#      open-jtalk + open-jtalk-mecab-naist-jdic) at the voice's native
#      48 kHz, 16-bit mono. The NAIST dictionary reads the kanji (and "KDDI"
#      as ケーディーディーアイ); the full-context trace is kept in $WORK for
#      checking readings.
#   3. Convert with sox to the telephone format: high-pass at 100 Hz (the
#      synthesiser leaves a small DC offset and rumble a handset cannot
#      play), resample to 8 kHz with sox's very-high-quality band-limiting
#      filter (rate -v: linear phase, pass band to ~3.8 kHz, no aliasing),
#      normalise the peak to -3 dBFS (gain -n -3: headroom, never clips),
#      and encode as G.711 mu-law (WAV format tag 7), mono. -D disables
#      dither so the output is deterministic.
#   4. Report each file's duration, peak and count of full-scale samples.
#
# Requirements: open_jtalk, sox, pip (only for step 1 when not cached),
# unzip, sha256sum.
# Usage: guidance-audio/make-guidance.sh  (from anywhere)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
DIC=${OPEN_JTALK_DIC:-/var/lib/mecab/dic/open-jtalk/naist-jdic}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/callrec-guidance
WHEEL_PKG="pyopenjtalk-plus==0.4.1.post10"
VOICE="$CACHE/mei_normal.htsvoice"
VOICE_SHA256=f3be49a6838904a6c218790b64e07c3e83c1886e995dca284b413caab19184de
WORK=${WORK:-$CACHE/work}

mkdir -p "$CACHE" "$WORK"

# 1. The voice.
if [ ! -f "$VOICE" ] || ! echo "$VOICE_SHA256  $VOICE" | sha256sum -c --quiet - 2>/dev/null; then
    echo "fetching the Mei voice from $WHEEL_PKG"
    rm -rf "$CACHE/wheel" && mkdir -p "$CACHE/wheel"
    pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/wheel" "$WHEEL_PKG"
    unzip -o -q -j "$CACHE"/wheel/*.whl \
        'pyopenjtalk/htsvoice/mei_normal.htsvoice' \
        'pyopenjtalk/htsvoice/LICENSE_mei_normal.htsvoice' -d "$CACHE"
    echo "$VOICE_SHA256  $VOICE" | sha256sum -c --quiet -
fi
[ -d "$DIC" ] || { echo "Open JTalk dictionary not found at $DIC (set OPEN_JTALK_DIC)" >&2; exit 1; }

# 2-4. One file per line of texts.txt.
n=0
while IFS= read -r text || [ -n "$text" ]; do
    [ -n "$text" ] || continue
    n=$((n + 1))
    printf '%s\n' "$text" > "$WORK/guidance$n.txt"
    open_jtalk -x "$DIC" -m "$VOICE" \
        -ow "$WORK/guidance$n.48k.wav" -ot "$WORK/guidance$n.trace" "$WORK/guidance$n.txt"
    sox -D -V1 "$WORK/guidance$n.48k.wav" \
        -r 8000 -c 1 -e u-law -b 8 "$HERE/guidance$n.wav" \
        highpass 100 rate -v 8000 gain -n -3
    # Decode back to 16-bit linear to measure what a listener gets.
    dur=$(soxi -D "$HERE/guidance$n.wav")
    peak=$(sox "$HERE/guidance$n.wav" -n stats 2>&1 | awk '/^Pk lev dB/ {print $4}')
    # mu-law's largest magnitude is 32124 (8031 << 2): count samples there.
    full=$(sox "$HERE/guidance$n.wav" -t s16 - | od -An -v -td2 -w2 |
        awk '{ v = $1 < 0 ? -$1 : $1; if (v >= 32124) c++ } END { print c + 0 }')
    printf 'guidance%d.wav  %5.2f s  peak %s dBFS  full-scale samples %d\n' "$n" "$dur" "$peak" "$full"
done < "$HERE/texts.txt"

[ "$n" -eq 5 ] || { echo "expected 5 texts, found $n" >&2; exit 1; }
