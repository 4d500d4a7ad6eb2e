#!/usr/bin/env bash
# Runs the fuzz target for a while and ends with one line the Makefile counts:
#   fuzz: N executions, N crashes in N s
# Usage: run-fuzzer.sh BINARY WORK_DIR SEED_DIR SECONDS JOBS
# New interesting inputs go to WORK_DIR/corpus (the seeds in git are only read); a crash leaves its
# input in WORK_DIR/crash-* and makes the exit status non-zero.
set -uo pipefail
binary=$1 work=$2 seeds=$3 seconds=$4 jobs=$5
mkdir -p "$work/corpus"
log=$work/last-run.log
stamp=$work/.run-start
touch "$stamp"

# Swift's own crash backtracer would wait for a debugger-style symbolication after libFuzzer has
# already printed the stack; turned off, a failed invariant ends the run at once.
export SWIFT_BACKTRACE=enable=no
options=(-max_total_time="$seconds" -artifact_prefix="$work/" -print_final_stats=1 -max_len=4096 -timeout=10
         -rss_limit_mb=2048)
# More than one job: libFuzzer's fork mode, which reports executions summed over its workers.
[ "$jobs" -gt 1 ] && options+=(-fork="$jobs")

start=$(date +%s)
"$binary" "${options[@]}" "$work/corpus" "$seeds" >"$log" 2>&1
status=$?
elapsed=$(( $(date +%s) - start ))

if [ "$jobs" -gt 1 ]; then
  executions=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
else
  executions=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log" | tail -1)
fi
reproducers=$(find "$work" -maxdepth 1 -newer "$stamp" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \))
crashes=$(printf '%s' "$reproducers" | grep -c . || true)
# A failure that left no reproducer (the fuzzer itself could not start) still counts as one.
[ "$status" -ne 0 ] && [ "$crashes" -eq 0 ] && crashes=1

if [ "$crashes" -gt 0 ]; then
  for reproducer in $reproducers; do
    echo "reproducer: $reproducer"
    # Replayed, so that the broken invariant is named here (fork mode keeps its workers' logs elsewhere).
    "$binary" "$reproducer" 2>&1 | grep -E 'invariant broken|Fatal error|ERROR: AddressSanitizer|SUMMARY:' | head -5
  done
  echo "replay one with: $binary FILE (whole log: $log)"
fi
echo "fuzz: ${executions:-0} executions, $crashes crashes in $elapsed s"
[ "$crashes" -eq 0 ]
