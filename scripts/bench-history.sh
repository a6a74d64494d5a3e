#!/usr/bin/env bash
# The call history at carrier scale: N generated calls (default 1,000,000),
# `callrec calls` answered the old way (whole file parsed per query) and
# from the SQLite index, each timed and measured (peak RSS) by /usr/bin/time;
# then a retention trim of the log and its index (the daemon's hourly pass).
# Release build; one benchmark at a time on a shared machine.
#   scripts/bench-history.sh [N]
set -euo pipefail
N=${1:-1000000}
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin callrec --example history_bench
T=${CARGO_TARGET_DIR:-target}
BIN=$T/release/callrec
GEN=$T/release/examples/history_bench
DIR=$(mktemp -d /tmp/callrec-bench-history.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$DIR/time" "$@" > "$DIR/out" 2> "$DIR/err" || { cat "$DIR/err"; exit 1; }
  read -r secs kb < "$DIR/time"
  printf '%-48s %8.3f s %9.1f MB  %9d lines out\n' "$label" "$secs" "$(echo "$kb/1024" | bc -l)" "$(wc -l < "$DIR/out")"
}
$GEN gen "$DIR" "$N"
printf 'history: %d calls, calls.jsonl %d MB\n' "$N" $(( $(stat -c %s "$DIR/calls.jsonl") / 1000000 ))
measure "before: --contract K-0042 --limit 10"        $GEN legacy "$DIR" --contract K-0042 --limit 10
measure "before: CSV of everything"                   $GEN legacy "$DIR"
measure "index: build from calls.jsonl (--reindex)"   $BIN calls --spool "$DIR" --reindex --limit 1
printf 'index: calls.sqlite %d MB\n' $(( $(stat -c %s "$DIR/calls.sqlite") / 1000000 ))
measure "index: first page (--limit 50)"              $BIN calls --spool "$DIR" --limit 50
measure "index: --contract K-0042 --limit 10"         $BIN calls --spool "$DIR" --contract K-0042 --limit 10
measure "index: --number 0312345678 (caller/callee)"  $BIN calls --spool "$DIR" --number 0312345678
measure "index: --since 2026-11-25 --until 2026-11-25 --limit 100" $BIN calls --spool "$DIR" --since 2026-11-25 --until 2026-11-25 --limit 100
measure "index: --reason overload --direction inbound --limit 20" $BIN calls --spool "$DIR" --reason overload --direction inbound --limit 20
measure "index: --contract K-0042 --format csv (all)" $BIN calls --spool "$DIR" --contract K-0042 --format csv
measure "index: CSV of everything"                    $BIN calls --spool "$DIR" --format csv
measure "index: JSON of everything"                   $BIN calls --spool "$DIR" --format json
# One more call appended: the next query catches up by offset, not by rebuilding.
tail -n 1 "$DIR/calls.jsonl" | sed 's/"call_id":"/"call_id":"new-/' >> "$DIR/calls.jsonl"
measure "index: catch up one new line + --call query" $BIN calls --spool "$DIR" --sort ended --limit 1
# Retention: the calls of the oldest day dropped from log and index (offsets remapped).
measure "retention: keep 9 days (log and index)"      $GEN trim "$DIR" 9
measure "index: after the trim, first page (--limit 50)" $BIN calls --spool "$DIR" --limit 50
