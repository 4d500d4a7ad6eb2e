#!/usr/bin/env bash
# Unmodified UCX 1.13.1, Debian's Open MPI 4.1 and Debian's MPICH 4.0 on libxpmem: one line per check, "PASS what" or
# "FAIL what: why" (the top-level Makefile counts them); exits non-zero if any check failed.
#   Tests/Interop/run-interop.sh WORK_DIR XPMEMD
# WORK_DIR holds UCX built by build-ucx.sh (WORK_DIR/ucx) against libxpmem (WORK_DIR/xpmem).
set -uo pipefail
WORK=$(realpath "${1:?usage: run-interop.sh WORK_DIR XPMEMD}")
XPMEMD=$(realpath "${2:?usage: run-interop.sh WORK_DIR XPMEMD}")
# shellcheck source=interop-env.sh
source "$(dirname "$0")/interop-env.sh"
trap stop_broker_and_clean EXIT
failed=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
# The output of a failed step, indented, so that the log says why.
show() { sed 's/^/    | /' "$1" | tail -n "${2:-30}"; }

# What the exporters' libraries backed for their peers' xpmem_attach: XPMEM_DEBUG=1 prints one
# "backed [start, +length): …, C bytes copied, R remapped …" line per range a peer attached for the
# first time; R counts the bytes newly made shared (a range attached again, or overlapping one backed
# before, adds only what was not shared yet). Each line exists only because a peer attached through
# libxpmem.
backed_ranges() { grep -c 'libxpmem\[[0-9]*\]: backed \[' "$1"; }
backed_bytes() {
    sed -n 's/.*libxpmem\[[0-9]*\]: backed \[.* bytes copied, \([0-9]*\) remapped.*/\1/p' "$1" |
        awk '{ total += $1 } END { print total + 0 }'
}

# The kinds of memory memory_kinds.c sent from ("memory-kind NAME FIRST LAST", decimal) that no range
# in the log's "backed [0xSTART, +0xLENGTH)" lines overlaps: every kind must have been attached (a
# kind carried by an eager copy instead would prove nothing about libxpmem). Prints them, or nothing.
kinds_not_backed() { # LOG
    local -a starts=() ends=() missing=()
    local start length name first last index found
    while read -r start length; do
        starts+=($((start)))
        ends+=($((start + length - 1)))
    done < <(sed -n 's/.*libxpmem\[[0-9]*\]: backed \[\(0x[0-9a-f]*\), +\(0x[0-9a-f]*\)).*/\1 \2/p' "$1")
    while read -r name first last; do
        found=0
        for index in "${!starts[@]}"; do
            if ((starts[index] <= last && ends[index] >= first)); then found=1; break; fi
        done
        ((found)) || missing+=("$name")
    done < <(sed -n 's/^memory-kind \([^ ]*\) \([0-9]*\) \([0-9]*\)$/\1 \2 \3/p' "$1")
    echo "${missing[*]}"
}

# For a run of memory_kinds.c (PROGRAM memory-kinds*): sets the caller's `unattached` (the kinds
# never attached) and `kinds_note` (what its PASS line adds); for other programs, both empty.
check_memory_kinds() { # PROGRAM LOG
    unattached=
    kinds_note=
    [[ $1 == memory-kinds* ]] || return 0
    unattached=$(kinds_not_backed "$2")
    kinds_note="; each kind's buffer lies in a range its sender backed for the peer"
}

# --- UCX sees the transport only when libxpmem answers ---------------------------------------------
if ! start_broker; then
    fail "a private broker starts at $XPMEM_SOCKET"
    exit 1
fi

ucx_info -d >"$run_dir/ucx_info.out" 2>&1
if grep -q 'Memory domain: xpmem' "$run_dir/ucx_info.out" && grep -q 'Transport: xpmem' "$run_dir/ucx_info.out"; then
    pass "ucx_info -d lists memory domain xpmem and transport xpmem (UCX $(ucx_info -v | sed -n 's/^# Version //p'))"
else
    fail "ucx_info -d lists memory domain xpmem and transport xpmem: it does not"
    show "$run_dir/ucx_info.out"
fi
# The control: with no broker and autostart off, xpmem_version() fails and UCX drops the transport.
# If xpmem were still listed, the check above would prove nothing about libxpmem.
XPMEM_SOCKET=$run_dir/nobody.sock ucx_info -d >"$run_dir/ucx_info_nobroker.out" 2>&1
# (It must still list its other shared-memory transport, posix: a ucx_info that failed altogether
# would list nothing and prove nothing.)
if grep -q 'Transport: xpmem' "$run_dir/ucx_info_nobroker.out"; then
    fail "without a broker (XPMEM_AUTOSTART=0) UCX does not offer xpmem: it still does"
elif ! grep -q 'Transport: posix' "$run_dir/ucx_info_nobroker.out"; then
    fail "without a broker (XPMEM_AUTOSTART=0) UCX does not offer xpmem: ucx_info listed no posix transport either"
    show "$run_dir/ucx_info_nobroker.out"
else
    pass "without a broker (XPMEM_AUTOSTART=0) UCX does not offer xpmem (it still offers posix)"
fi
device=$(awk '/Memory domain: xpmem/ { md = 1 } md && /Transport: xpmem/ { tl = 1 } tl && /Device: / { print $3; exit }' \
         "$run_dir/ucx_info.out")
device=${device:-memory}

# --- ucx_perftest: UCT put and get over the xpmem transport alone, two processes ------------------
# The server listens on a TCP port for the client's parameters; the client starts once it listens.
port_listening() { # PORT
    local hex
    hex=$(printf '%04X' "$1")
    awk -v port=":$hex" '$2 ~ port"$" && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6
}
perftest() { # TEST LAYOUT SIZE
    local test=$1 layout=$2 size=$3 port=$((20000 + RANDOM % 20000)) server
    local common=(-x xpmem -d "$device" -t "$test" -D "$layout" -s "$size" -n 2000 -w 100 -p "$port")
    XPMEM_DEBUG=1 timeout 120 ucx_perftest "${common[@]}" >"$run_dir/$test.server" 2>&1 &
    server=$!
    for _ in $(seq 200); do port_listening "$port" && break; sleep 0.05; done
    timeout 120 ucx_perftest localhost "${common[@]}" >"$run_dir/$test.client" 2>&1
    local client_status=$?
    wait "$server"
    local server_status=$?
    # The final line: "Final: ITERATIONS latency… bandwidth(MB/s) average overall msgrate…".
    local final
    final=$(grep -m1 '^Final:' "$run_dir/$test.client")
    local what="ucx_perftest -x xpmem -d $device -t $test -D $layout -s $size, server and client processes"
    if [ $client_status -eq 0 ] && [ $server_status -eq 0 ] && [ -n "$final" ] \
        && [ "$(backed_ranges "$run_dir/$test.server")" -gt 0 ]; then
        pass "$what: $(awk '{ printf "%.0f MB/s", $(NF-2) }' <<<"$final") (the server's library backed" \
             "$(backed_ranges "$run_dir/$test.server") range(s) for the client's attaches)"
    else
        fail "$what: client status $client_status, server status $server_status," \
             "$(backed_ranges "$run_dir/$test.server") range(s) backed for the client"
        show "$run_dir/$test.client"
        show "$run_dir/$test.server" 10
    fi
}
# UCX 1.13 names its get test "get" (latency, bandwidth and message rate); bcopy, as get has no short form.
perftest put_bw bcopy 1048576
perftest get bcopy 1048576

# --- Open MPI's pml ucx with only xpmem between the ranks ------------------------------------------
if ! compile_examples >"$run_dir/mpicc.out" 2>&1; then
    fail "mpicc compiles Examples/mpi-c"
    show "$run_dir/mpicc.out"
    exit 1
fi
# Each example checks every byte (pingpong) or every sum (allreduce) and prints "OK: …" or
# "FAILED: …", exiting 1 on a wrong result. UCX_LOG_LEVEL=info makes each rank print its endpoints'
# lanes: the endpoint to the other rank must use xpmem alone (Open MPI asks UCX for tags only,
# "tag(xpmem/memory)"; MPICH for tags, remote memory access and active messages).
openmpi_what="mpirun -np 2 --mca pml ucx -x UCX_TLS=xpmem,self"
openmpi_peer_lanes='tag\(xpmem/memory\)'
openmpi_4ranks_what="mpirun -np 4 --oversubscribe --mca pml ucx -x UCX_TLS=xpmem,self"
openmpi_4ranks_peer_lanes=$openmpi_peer_lanes
mpich_what="mpirun.mpich -n 2 (MPICH ch4:ucx, MPIR_CVAR_NOLOCAL=1, UCX_TLS=xpmem,self)"
mpich_peer_lanes='tag\(xpmem/memory\) rma\(xpmem/memory\) am\(xpmem/memory\)'
mpi_check() { # LOG_NAME MIN_BACKED_BYTES MPI PROGRAM ARGS...   (MPI: openmpi, openmpi_4ranks or mpich)
    local log=$run_dir/$1.out min_bytes=$2 mpi=$3 program=$4 ranks=2
    shift 4
    local -n launcher=mpirun_ucx_xpmem
    [ "$mpi" = openmpi_4ranks ] && local -n launcher=mpirun_ucx_xpmem_4ranks && ranks=4
    [ "$mpi" = mpich ] && local -n launcher=mpirun_mpich_ucx_xpmem
    local what_name=${mpi}_what lanes_name=${mpi}_peer_lanes
    XPMEM_DEBUG=1 UCX_LOG_LEVEL=info timeout 300 "${launcher[@]}" "$run_dir/$program" "$@" >"$log" 2>&1
    local status=$? verdict ranges bytes xpmem_endpoints
    verdict=$(grep -m1 -E '^(OK|FAILED):' "$log")
    xpmem_endpoints=$(grep -cE "UCX +INFO +ep_cfg\[[0-9]+\]: ${!lanes_name}\$" "$log")
    ranges=$(backed_ranges "$log")
    bytes=$(backed_bytes "$log")
    local unattached kinds_note
    check_memory_kinds "$program" "$log"
    local what="${!what_name} $program${*:+ $*}"
    if [ $status -eq 0 ] && [[ $verdict == OK:* ]] && [ "$bytes" -ge "$min_bytes" ] && [ "$xpmem_endpoints" -eq "$ranks" ] \
        && [ -z "$unattached" ]; then
        pass "$what: ${verdict#OK: }; every rank's endpoints to the others use xpmem alone; $ranges range(s)," \
             "$((bytes >> 20)) MiB of the ranks' memory shared for the peer's attaches$kinds_note"
    else
        fail "$what: status $status, verdict '${verdict:-none}', $xpmem_endpoints of $ranks ranks' endpoints with xpmem alone," \
             "$ranges range(s) and $bytes bytes shared for the peer (at least $min_bytes expected)" \
             "${unattached:+; never attached: $unattached}${why:+; $why}"
        show "$log"
    fi
}
# 64 MiB messages: the rendezvous attaches the sender's buffer, so at least 64 MiB is made shared.
mpi_check pingpong $((64 << 20)) openmpi pingpong --sizes 8,4K,1M,4M,64M --scale 0.05 --batches 3
mpi_check allreduce $((1 << 20)) openmpi allreduce --sizes 1M,8M --scale 0.05 --batches 3
# Memory freed and allocated again: allreduce frees its 64 MiB vectors after the first size and
# allocates them again for the second; glibc maps both times with mmap, at the same addresses. UCX
# keeps its attachment of the first peer buffer (with kernel XPMEM that attachment follows the
# exporter's page tables) and libxpmem's mapping still shows the first buffer's pages.
why="importers do not follow an exporter that frees and reuses memory (README, 'Not yet')" \
    mpi_check allreduce-reuse $((64 << 20)) openmpi allreduce --sizes 64M,64M --scale 0.05 --batches 2
# Stack, static data, heap and mmap sent each way, and a buffer freed and allocated again (memory_kinds.c).
mpi_check memory-kinds $((64 << 20)) openmpi memory-kinds
# Four ranks: the allreduce's large steps go from rank to rank through attached buffers, each rank
# exporting to and attaching the partners Open MPI's algorithm pairs it with.
mpi_check allreduce-4ranks $((64 << 20)) openmpi_4ranks allreduce --sizes 1M,8M,64M --scale 0.05 --batches 2

# The control: the same run with no broker must fail, or the passes above would not need libxpmem.
no_broker_control() { # LOG_NAME LAUNCHER PROGRAM COMMAND   (LAUNCHER: the name of an mpirun array)
    local log=$run_dir/$1.out launcher_name=$2 program=$3 command=$4 status
    local -n launcher=$launcher_name
    XPMEM_SOCKET=$run_dir/nobody.sock timeout 120 "${launcher[@]}" "$run_dir/$program" --sizes 1M \
        --scale 0.05 --batches 1 >"$log" 2>&1
    status=$?
    if [ $status -ne 0 ] && ! grep -q '^OK:' "$log"; then
        pass "without a broker the same $command fails (status $status): the ranks had no other way to talk"
    else
        fail "without a broker the same $command fails: it exited $status"
        show "$log"
    fi
}
no_broker_control nobroker mpirun_ucx_xpmem pingpong mpirun

# --- MPICH (ch4:ucx) with only xpmem between the ranks -----------------------------------------------
if ! command -v mpicc.mpich >/dev/null || ! command -v mpirun.mpich >/dev/null; then
    fail "MPICH runs on libxpmem: Debian's mpich is not installed (apt-get install -y mpich libmpich-dev)"
elif ! compile_examples_mpich >"$run_dir/mpicc-mpich.out" 2>&1; then
    fail "mpicc.mpich compiles Examples/mpi-c"
    show "$run_dir/mpicc-mpich.out"
else
    mpi_check mpich-pingpong $((64 << 20)) mpich pingpong-mpich --sizes 8,4K,1M,4M,64M --scale 0.05 --batches 3
    mpi_check mpich-allreduce $((1 << 20)) mpich allreduce-mpich --sizes 1M,8M --scale 0.05 --batches 3
    mpi_check mpich-memory-kinds $((64 << 20)) mpich memory-kinds-mpich
    no_broker_control nobroker-mpich mpirun_mpich_ucx_xpmem pingpong-mpich mpirun.mpich
fi

# --- MPICH's own XPMEM module (ch4 shm ipc xpmem), unmodified, built by build-mpich.sh ----------------
# Ranks on one node send point-to-point messages of 4 KiB and more through it: the receiver attaches
# the sender's buffer (xpmem_make of the whole address space at MPI_Init, xpmem_get at the first
# message, xpmem_attach of the page-aligned range around the buffer, kept in MPICH's own cache until
# MPI_Finalize) and copies out of it. (Its allreduce of 2 ranks does not use the module.) Debian's
# UCX (no xpmem transport) is the netmod here, so only MPICH's module can make the ranks' libraries
# back anything.
if ! mpich_xpmem_built; then
    fail "MPICH's own xpmem module runs on libxpmem: no MPICH built in $MPICH_XPMEM (Tests/Interop/build-mpich.sh;" \
         "log: $WORK/mpich-build.log)"
elif ! compile_examples_mpich_xpmem >"$run_dir/mpicc-xpmem.out" 2>&1; then
    fail "MPICH's mpicc (built --with-xpmem) compiles Examples/mpi-c/pingpong.c and memory_kinds.c"
    show "$run_dir/mpicc-xpmem.out"
else
    mpich_xpmem_run() { # LOG_NAME PROGRAM ARGS...   (extra environment from the caller)
        local log=$run_dir/$1.out program=$2
        shift 2
        XPMEM_DEBUG=1 timeout 300 "${mpiexec_mpich_xpmem[@]}" "$run_dir/$program" "$@" >"$log" 2>&1
    }
    mpich_xpmem_check() { # LOG_NAME MIN_BACKED_BYTES PROGRAM ARGS...
        local name=$1 log=$run_dir/$1.out min_bytes=$2 program=$3
        shift 3
        mpich_xpmem_run "$name" "$program" "$@"
        local status=$? verdict ranges bytes
        verdict=$(grep -m1 -E '^(OK|FAILED):' "$log")
        ranges=$(backed_ranges "$log")
        bytes=$(backed_bytes "$log")
        local unattached kinds_note
        check_memory_kinds "$program" "$log"
        local what="mpiexec -n 2 ${program%-mpich-xpmem}${*:+ $*} (MPICH 4.0.2's own xpmem module)"
        if [ $status -eq 0 ] && [[ $verdict == OK:* ]] && [ "$bytes" -ge "$min_bytes" ] && [ -z "$unattached" ]; then
            pass "$what: ${verdict#OK: }; $ranges range(s), $((bytes >> 20)) MiB of the ranks' memory" \
                 "shared for the peer's attaches$kinds_note"
        else
            fail "$what: status $status, verdict '${verdict:-none}', $ranges range(s) and $bytes bytes" \
                 "shared for the peer (at least $min_bytes expected)${unattached:+; never attached: $unattached}"
            show "$log"
        fi
    }
    mpich_xpmem_check mpich-xpmem-pingpong $((64 << 20)) pingpong-mpich-xpmem --sizes 8,4K,1M,4M,64M --scale 0.05 --batches 3
    # Its buffer freed and allocated again at the same address: MPICH keeps its attachment of the
    # first buffer and relies on it following the exporter, as kernel XPMEM's does.
    mpich_xpmem_check mpich-xpmem-memory-kinds $((64 << 20)) memory-kinds-mpich-xpmem
    # The control: with the module switched off the same run passes without a single attach, so
    # the ranges counted above were the module's.
    MPIR_CVAR_CH4_XPMEM_ENABLE=0 mpich_xpmem_run mpich-xpmem-off pingpong-mpich-xpmem --sizes 1M --scale 0.05 --batches 1
    status=$?
    if [ $status -eq 0 ] && grep -q '^OK:' "$run_dir/mpich-xpmem-off.out" \
        && [ "$(backed_ranges "$run_dir/mpich-xpmem-off.out")" -eq 0 ]; then
        pass "with MPIR_CVAR_CH4_XPMEM_ENABLE=0 the same MPICH passes with nothing backed: the ranges above were its xpmem module's"
    else
        fail "with MPIR_CVAR_CH4_XPMEM_ENABLE=0 MPICH passes with nothing backed: status $status," \
             "$(backed_ranges "$run_dir/mpich-xpmem-off.out") range(s) backed"
        show "$run_dir/mpich-xpmem-off.out"
    fi
fi

exit $((failed > 0))
