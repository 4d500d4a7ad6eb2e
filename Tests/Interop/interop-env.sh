# Sourced by run-interop.sh and bench-interop.sh: where the rebuilt UCX and libxpmem are, a private
# broker for the run, and the mpirun command lines (Open MPI's and MPICH's). Needs WORK (the build dir holding ucx/ and
# xpmem/) and XPMEMD (the broker to run) set by the caller.
UCX=$WORK/ucx
XPMEM_PREFIX=$WORK/xpmem
EXAMPLES=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../Examples/mpi-c" && pwd)
run_dir=$(mktemp -d /tmp/xpmem-interop-XXXXXX)
broker_pid=
original_library_path=${LD_LIBRARY_PATH:-}
# The rebuilt UCX first, then our library: Debian's libucx0 (no xpmem transport) must not be found.
export LD_LIBRARY_PATH=$UCX/lib:$XPMEM_PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=$UCX/bin:$PATH
# A private broker on a private socket, started here (not autostarted) so that it is stopped here.
export XPMEM_SOCKET=$run_dir/xpmemd.sock XPMEM_AUTOSTART=0
# As root (CI), Open MPI refuses to start without both.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export XPMEM_DEBUG=${XPMEM_DEBUG:-0} UCX_LOG_LEVEL=${UCX_LOG_LEVEL:-warn}

start_broker() {
    "$XPMEMD" --socket "$XPMEM_SOCKET" --log-level warning 2>"$run_dir/xpmemd.log" &
    broker_pid=$!
    for _ in $(seq 200); do [ -S "$XPMEM_SOCKET" ] && return 0; sleep 0.05; done
    echo "interop: the broker did not start; its log:" >&2
    cat "$run_dir/xpmemd.log" >&2
    return 1
}

stop_broker_and_clean() {
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    rm -rf "$run_dir"
}

# The MPI twins of the examples, and memory_kinds.c beside this file, compiled with Debian's Open MPI
# (whose mpicc knows nothing of UCX).
MEMORY_KINDS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/memory_kinds.c
compile_examples() {
    mpicc -O2 -o "$run_dir/pingpong" "$EXAMPLES/pingpong.c" && mpicc -O2 -o "$run_dir/allreduce" "$EXAMPLES/allreduce.c" \
        && mpicc -O2 -o "$run_dir/memory-kinds" "$MEMORY_KINDS"
}

# The same compiled with Debian's MPICH (ch4:ucx), which loads libucp like Open MPI's pml ucx.
compile_examples_mpich() {
    mpicc.mpich -O2 -o "$run_dir/pingpong-mpich" "$EXAMPLES/pingpong.c" \
        && mpicc.mpich -O2 -o "$run_dir/allreduce-mpich" "$EXAMPLES/allreduce.c" \
        && mpicc.mpich -O2 -o "$run_dir/memory-kinds-mpich" "$MEMORY_KINDS"
}

allow_root=()
[ "$(id -u)" = 0 ] && allow_root=(--allow-run-as-root)

# mpirun over UCX with UCX_TLS=xpmem,self: between the two ranks only UCX's xpmem transport exists
# (its active messages go through a FIFO the peer attaches with xpmem_attach, its large messages
# through attached user buffers), so anything that arrives came through libxpmem.
# pml_ucx_tls/devices=any: Open MPI 4.1 otherwise declines UCX when it offers no InfiniBand transport.
openmpi_ucx_xpmem_options=(--mca pml ucx --mca pml_ucx_tls any --mca pml_ucx_devices any --mca btl self
    --mca osc ^ucx -x UCX_TLS=xpmem,self -x LD_LIBRARY_PATH -x XPMEM_SOCKET -x XPMEM_AUTOSTART -x XPMEM_DEBUG
    -x UCX_LOG_LEVEL)
mpirun_ucx_xpmem=(mpirun "${allow_root[@]}" -np 2 --bind-to core "${openmpi_ucx_xpmem_options[@]}")
# Four ranks: possibly more than the machine's cores (two on the development machine), so not bound.
mpirun_ucx_xpmem_4ranks=(mpirun "${allow_root[@]}" -np 4 --oversubscribe --bind-to none
    "${openmpi_ucx_xpmem_options[@]}")

# The same Open MPI + rebuilt UCX without libxpmem: UCX's own shared-memory transport (posix),
# to tell what UCX and pml ucx cost from what libxpmem adds (benchmark only).
mpirun_ucx_posix=(mpirun "${allow_root[@]}" -np 2 --bind-to core --mca pml ucx --mca pml_ucx_tls any
    --mca pml_ucx_devices any --mca btl self --mca osc ^ucx -x UCX_TLS=posix,self -x LD_LIBRARY_PATH)

# The reference: Debian's Open MPI alone (no rebuilt UCX on its library path), ob1 over vader with
# CMA single copy (process_vm_readv).
mpirun_vader_cma=(env "LD_LIBRARY_PATH=$original_library_path" mpirun "${allow_root[@]}" -np 2 --bind-to core
    --mca pml ob1 --mca btl vader,self --mca btl_vader_single_copy_mechanism cma)

# MPICH 4.0.2 rebuilt with its own XPMEM module (build-mpich.sh), over Debian's UCX (no xpmem
# transport): only the module can make the ranks' libraries back anything.
MPICH_XPMEM=$WORK/mpich
mpich_xpmem_library_path=$XPMEM_PREFIX/lib:$MPICH_XPMEM/lib${original_library_path:+:$original_library_path}
mpiexec_mpich_xpmem=(env "LD_LIBRARY_PATH=$mpich_xpmem_library_path" "$MPICH_XPMEM/bin/mpiexec" -n 2 -bind-to core)
mpich_xpmem_built() { [ -x "$MPICH_XPMEM/bin/mpiexec" ]; }
# Its mpicc links -lxpmem without a -L: the linker finds libxpmem through LD_LIBRARY_PATH.
compile_examples_mpich_xpmem() {
    LD_LIBRARY_PATH=$mpich_xpmem_library_path "$MPICH_XPMEM/bin/mpicc" -O2 -o "$run_dir/pingpong-mpich-xpmem" \
        "$EXAMPLES/pingpong.c" \
        && LD_LIBRARY_PATH=$mpich_xpmem_library_path "$MPICH_XPMEM/bin/mpicc" -O2 \
            -o "$run_dir/memory-kinds-mpich-xpmem" "$MEMORY_KINDS"
}

# Debian's MPICH 4.0 (device ch4:ucx) over the rebuilt UCX with UCX_TLS=xpmem,self. MPICH keeps
# ranks on one node to its own shared-memory path; MPIR_CVAR_NOLOCAL=1 sends them through the netmod,
# UCX, as it does ranks on other nodes. Hydra passes the environment to the ranks.
mpirun_mpich_ucx_xpmem=(env MPIR_CVAR_NOLOCAL=1 UCX_TLS=xpmem,self mpirun.mpich -n 2 -bind-to core)
