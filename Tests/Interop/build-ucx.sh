#!/usr/bin/env bash
# Builds the unmodified UCX release (the tarball below, tests only; never copied into git) against
# libxpmem installed in PREFIX_XPMEM, into PREFIX_UCX. Skipped when a stamp says the same tarball,
# header and configure flags were built already: the build takes minutes, the check seconds.
#   Tests/Interop/build-ucx.sh WORK_DIR    (WORK_DIR/xpmem must hold `make -C libxpmem install`)
set -euo pipefail
work=$(realpath -m "${1:?usage: build-ucx.sh WORK_DIR}")
# The tarball is provided beside the checkout (../shared/interop, for development machines and CI).
repository=$(cd "$(dirname "$0")/../.." && pwd)
tarball=${UCX_TARBALL:-$repository/../shared/interop/ucx-1.13.1.tar.xz}
[ -f "$tarball" ] || [ -n "${UCX_TARBALL:-}" ] || tarball=/work/shared/interop/ucx-1.13.1.tar.xz
xpmem=$work/xpmem
ucx=$work/ucx
# No InfiniBand, no RDMA-CM, no KNEM: shared memory alone, so xpmem has only posix/sysv/cma beside it.
# --disable-logging leaves warnings and errors (and the info level) in; it drops debug and trace.
flags=(--prefix="$ucx" --with-xpmem="$xpmem" --disable-logging --without-java --without-go
       --without-verbs --without-rdmacm --without-knem)

[ -f "$tarball" ] || { echo "build-ucx: no UCX source at $tarball (set UCX_TARBALL)" >&2; exit 1; }
[ -f "$xpmem/include/xpmem.h" ] || { echo "build-ucx: $xpmem holds no installed libxpmem" >&2; exit 1; }
stamp=$work/ucx.stamp
want=$( { sha256sum "$tarball" | cut -d' ' -f1; sha256sum "$xpmem/include/xpmem.h" | cut -d' ' -f1;
          printf '%s\n' "${flags[@]}"; } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$ucx/bin/ucx_info" ]; then
    echo "build-ucx: UCX is up to date in $ucx"
    exit 0
fi

rm -rf "$work/src" "$ucx" "$stamp"
mkdir -p "$work/src"
tar xJf "$tarball" -C "$work/src"
source_dir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)
log=$work/ucx-build.log
echo "build-ucx: building $(basename "$source_dir") with --with-xpmem=$xpmem (minutes; log: $log)"
(
    cd "$source_dir"
    # A release tarball of a git tag carries no configure script.
    [ -x configure ] || ./autogen.sh
    ./configure "${flags[@]}"
    make -j"$(nproc)"
    make install
) >"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "build-ucx: the build failed; see $log" >&2; exit 1; }
# configure quietly drops a transport whose library it cannot find: insist on it here.
grep -q 'xpmem' "$ucx/lib/ucx/"libuct_xpmem.so* 2>/dev/null \
    || { echo "build-ucx: UCX's configure did not build the xpmem transport; see $log" >&2; exit 1; }
echo "$want" >"$stamp"
echo "build-ucx: UCX installed in $ucx"
