#!/usr/bin/env bash
# Open MPI + rebuilt UCX + libxpmem (pml ucx, UCX_TLS=xpmem,self) against Debian's Open MPI with
# ob1/vader and CMA single copy, on Examples/mpi-c/pingpong.c. Runs are INTERLEAVED (ours,
# reference, ours, reference, …) so that the machine's drift hits both alike; each pair gives one
# ratio per figure, and the JSON reports their median and min–max. Each pair also runs the same
# Open MPI + UCX without libxpmem (UCX_TLS=posix,self): its 8-byte latency against ours says how
# much of ours is UCX's own. When build-mpich.sh has built MPICH with its own XPMEM module, each pair
# also runs that MPICH with the module on (over libxpmem) and off (MPIR_CVAR_CH4_XPMEM_ENABLE=0: its
# shared-memory copy through cells), for the mpich_xpmem_* ratios. Measures, asserts nothing.
#   Tests/Interop/bench-interop.sh WORK_DIR XPMEMD [PAIRS]
set -euo pipefail
WORK=$(realpath "${1:?usage: bench-interop.sh WORK_DIR XPMEMD [PAIRS]}")
XPMEMD=$(realpath "${2:?usage: bench-interop.sh WORK_DIR XPMEMD [PAIRS]}")
pairs=${3:-5}
# shellcheck source=interop-env.sh
source "$(dirname "$0")/interop-env.sh"
trap stop_broker_and_clean EXIT
start_broker
compile_examples >&2
arguments=(--sizes 8,1M,4M,64M --batches 5)
with_mpich=false
if mpich_xpmem_built; then
    with_mpich=true
    compile_examples_mpich_xpmem >&2
fi

# One run of pingpong; its table rows "SIZE LATENCY_US BANDWIDTH_MBS" go to the file, and a run
# without the example's own "OK" verdict (every byte checked) stops the benchmark.
measure() { # OUTPUT_FILE PROGRAM MPIRUN...
    local file=$1 program=$2
    shift 2
    local output
    output=$("$@" "$run_dir/$program" "${arguments[@]}" 2>&1) || { echo "$output" >&2; exit 1; }
    grep -q '^OK:' <<<"$output" || { echo "$output" >&2; echo "bench-interop: no OK verdict" >&2; exit 1; }
    awk '$1 ~ /^[0-9]+$/ && NF == 3 { print $1, $2, $3 }' <<<"$output" >"$file"
}

for pair in $(seq "$pairs"); do
    echo "bench-interop: pair $pair of $pairs" >&2
    measure "$run_dir/ours.$pair" pingpong "${mpirun_ucx_xpmem[@]}"
    measure "$run_dir/reference.$pair" pingpong "${mpirun_vader_cma[@]}"
    measure "$run_dir/ucx-posix.$pair" pingpong "${mpirun_ucx_posix[@]}"
    if $with_mpich; then
        measure "$run_dir/mpich-xpmem.$pair" pingpong-mpich-xpmem "${mpiexec_mpich_xpmem[@]}"
        measure "$run_dir/mpich-cells.$pair" pingpong-mpich-xpmem env MPIR_CVAR_CH4_XPMEM_ENABLE=0 \
            "${mpiexec_mpich_xpmem[@]}"
    else
        # No MPICH with its module: the columns repeat ours, and its ratios are left out below.
        cp "$run_dir/ours.$pair" "$run_dir/mpich-xpmem.$pair"
        cp "$run_dir/ours.$pair" "$run_dir/mpich-cells.$pair"
    fi
done

# Per pair: bandwidth ratios ours ÷ reference (above 1: ours is faster), latency ratio ours ÷
# reference (below 1: ours is faster). Then each ratio's median (lower middle for an even count),
# min and max over the pairs, and each side's median figure.
for pair in $(seq "$pairs"); do
    awk -v pair="$pair" 'FILENAME ~ /\/ours\.[0-9]+$/ { latency[$1] = $2; bandwidth[$1] = $3; next }
        FILENAME ~ /\/ucx-posix\.[0-9]+$/ { posix[$1] = $2; next }
        FILENAME ~ /\/mpich-xpmem\.[0-9]+$/ { mx_lat[$1] = $2; mx_bw[$1] = $3; next }
        FILENAME ~ /\/mpich-cells\.[0-9]+$/ { mc_lat[$1] = $2; mc_bw[$1] = $3; next }
        { printf "%s %s %.6f %.6f %.6f %.6f %.6f %.6f %.6f %.6f %.6f\n", pair, $1, latency[$1], $2, bandwidth[$1], $3,
                 posix[$1], mx_lat[$1], mx_bw[$1], mc_lat[$1], mc_bw[$1] }' \
        "$run_dir/ours.$pair" "$run_dir/ucx-posix.$pair" "$run_dir/mpich-xpmem.$pair" "$run_dir/mpich-cells.$pair" \
        "$run_dir/reference.$pair"
done | awk -v pairs="$pairs" -v with_mpich="$with_mpich" -v ucx="$(ucx_info -v | sed -n 's/^# Version //p')" \
    -v ompi="$(mpirun --version 2>/dev/null | sed -n '1s/.* //p')" '
    function median(list, count,    sorted, i, j, t) {
        for (i = 1; i <= count; i++) sorted[i] = list[i]
        for (i = 2; i <= count; i++) for (j = i; j > 1 && sorted[j-1] > sorted[j]; j--) {
            t = sorted[j]; sorted[j] = sorted[j-1]; sorted[j-1] = t }
        return sorted[int((count + 1) / 2)]
    }
    function spread(name, list, count,    i, lo, hi) {
        lo = hi = list[1]
        for (i = 2; i <= count; i++) { if (list[i] < lo) lo = list[i]; if (list[i] > hi) hi = list[i] }
        ratios[++n] = sprintf("    \"%s\": %.3f", name, median(list, count))
        spreads[n] = sprintf("    \"%s\": [%.3f, %.3f]", name, lo, hi)
        each[n] = sprintf("    \"%s\": [", name)
        for (i = 1; i <= count; i++) each[n] = each[n] sprintf("%.3f%s", list[i], i < count ? ", " : "]")
    }
    { size = $2; p = $1
      lat_ours[size, p] = $3; lat_ref[size, p] = $4; bw_ours[size, p] = $5; bw_ref[size, p] = $6
      lat_posix[size, p] = $7
      mx_lat[size, p] = $8; mx_bw[size, p] = $9; mc_lat[size, p] = $10; mc_bw[size, p] = $11 }
    END {
        split("1048576 4194304 67108864", sizes, " "); split("1MiB 4MiB 64MiB", names, " ")
        for (s = 1; s <= 3; s++) {
            for (p = 1; p <= pairs; p++) r[p] = bw_ours[sizes[s], p] / bw_ref[sizes[s], p]
            spread("ucx_xpmem_bw_" names[s] "_vs_vader_cma", r, pairs)
        }
        for (p = 1; p <= pairs; p++) r[p] = lat_ours[8, p] / lat_ref[8, p]
        spread("ucx_xpmem_latency_8B_vs_vader", r, pairs)
        for (p = 1; p <= pairs; p++) r[p] = lat_posix[8, p] / lat_ref[8, p]
        spread("ucx_posix_latency_8B_vs_vader", r, pairs)
        for (p = 1; p <= pairs; p++) r[p] = lat_ours[8, p] / lat_posix[8, p]
        spread("ucx_xpmem_latency_8B_vs_ucx_posix", r, pairs)
        if (with_mpich == "true") {
            for (s = 1; s <= 3; s++) {
                for (p = 1; p <= pairs; p++) r[p] = mx_bw[sizes[s], p] / mc_bw[sizes[s], p]
                spread("mpich_xpmem_bw_" names[s] "_vs_mpich_cells", r, pairs)
                for (p = 1; p <= pairs; p++) r[p] = mx_bw[sizes[s], p] / bw_ref[sizes[s], p]
                spread("mpich_xpmem_bw_" names[s] "_vs_vader_cma", r, pairs)
            }
            for (p = 1; p <= pairs; p++) r[p] = mx_lat[8, p] / mc_lat[8, p]
            spread("mpich_xpmem_latency_8B_vs_mpich_cells", r, pairs)
        }
        printf "{\n  \"note\": \"Examples/mpi-c/pingpong, 2 ranks bound to cores, %d interleaved pairs. ours: Open MPI %s pml ucx + UCX %s (UCX_TLS=xpmem,self) + libxpmem; reference: Open MPI %s pml ob1, btl vader,self, single copy cma; ucx_posix: ours without libxpmem (UCX_TLS=posix,self)%s. bw ratios ours/reference (>1 ours faster), latency ratio ours/reference (<1 ours faster)\",\n", pairs, ompi, ucx, ompi, with_mpich == "true" ? "; mpich_xpmem: MPICH 4.0.2 built with its own xpmem module, on libxpmem; mpich_cells: the same MPICH with MPIR_CVAR_CH4_XPMEM_ENABLE=0 (its shared-memory cells)" : ""
        printf "  \"medians\": {\n"
        for (s = 1; s <= 3; s++) {
            for (p = 1; p <= pairs; p++) { a[p] = bw_ours[sizes[s], p]; b[p] = bw_ref[sizes[s], p] }
            printf "    \"bw_%s_MBps\": {\"ours\": %.0f, \"vader_cma\": %.0f},\n", names[s], median(a, pairs), median(b, pairs)
        }
        for (p = 1; p <= pairs; p++) { a[p] = lat_ours[8, p]; b[p] = lat_ref[8, p] }
        for (p = 1; p <= pairs; p++) c[p] = lat_posix[8, p]
        printf "    \"latency_8B_us\": {\"ours\": %.3f, \"vader\": %.3f, \"ucx_posix\": %.3f}%s\n", median(a, pairs), median(b, pairs), median(c, pairs), with_mpich == "true" ? "," : ""
        if (with_mpich == "true") {
            for (s = 1; s <= 3; s++) {
                for (p = 1; p <= pairs; p++) { a[p] = mx_bw[sizes[s], p]; b[p] = mc_bw[sizes[s], p] }
                printf "    \"mpich_bw_%s_MBps\": {\"xpmem\": %.0f, \"cells\": %.0f},\n", names[s], median(a, pairs), median(b, pairs)
            }
            for (p = 1; p <= pairs; p++) { a[p] = mx_lat[8, p]; b[p] = mc_lat[8, p] }
            printf "    \"mpich_latency_8B_us\": {\"xpmem\": %.3f, \"cells\": %.3f}\n", median(a, pairs), median(b, pairs)
        }
        printf "  },\n"
        printf "  \"ratios\": {\n"
        for (i = 1; i <= n; i++) printf "%s%s\n", ratios[i], i < n ? "," : ""
        printf "  },\n  \"ratio_min_max\": {\n"
        for (i = 1; i <= n; i++) printf "%s%s\n", spreads[i], i < n ? "," : ""
        printf "  },\n  \"ratio_each_pair\": {\n"
        for (i = 1; i <= n; i++) printf "%s%s\n", each[i], i < n ? "," : ""
        printf "  }\n}\n"
    }'
