#!/usr/bin/env bash
# The main job on an embedded default: `xprun -n 4 allreduce` (xprun starts a private broker for the
# job, four ranks sum their vectors single-copy and check the result against a serial sum); then,
# with a private broker on a temporary socket, export a 64 MiB segment filled with 42 from one
# process, import it from two others (one writes 7, one verifies 7 read-only), show the broker's
# view, and clean up.
set -euo pipefail
bin=${1:-.build/release}
dir=$(mktemp -d /tmp/xpmem-demo-XXXXXX)
socket=$dir/xpmemd.sock
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

echo "== xprun -n 4 allreduce (a private broker for the job; 4 ranks; checked against a serial sum)"
XPMEM_SOCKET="$dir/job.sock" "$bin/xprun" -n 4 "$bin/allreduce" --sizes 8K,1M,16M --scale 0.2

echo "== starting a private broker at $socket"
"$bin/xpmemd" --socket "$socket" --log-level warning &
pids+=($!)
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.05; done

echo "== share export: 64 MiB, every byte 42"
"$bin/share" export --socket "$socket" --size 64M --pattern 42 >"$dir/export.out" &
pids+=($!)
for _ in $(seq 200); do [ -s "$dir/export.out" ] && break; sleep 0.05; done
segid=$(head -n 1 "$dir/export.out")
echo "segment id: $segid"

echo "== xpmemctl segments"
"$bin/xpmemctl" segments --socket "$socket"

echo "== share import: verify 42, then write 7 into the exporter's pages"
"$bin/share" import --socket "$socket" "$segid" --verify 42 --write 7

echo "== share import --readonly: the same pages now hold 7"
"$bin/share" import --socket "$socket" "$segid" --verify 7 --readonly

echo "== share import of 8 KiB at offset 1 MiB"
"$bin/share" import --socket "$socket" "$segid" --verify 7 --offset 1M --length 8K

echo "== demo passed"
