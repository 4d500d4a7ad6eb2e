#!/usr/bin/env bash
# Builds unmodified MPICH 4.0.2 (Debian 12's version, from Debian's source package; tests only, never
# copied into git) with its own XPMEM module (ch4 shm ipc xpmem) against libxpmem installed in
# WORK_DIR/xpmem, into WORK_DIR/mpich. Debian's MPICH is built without that module, so checking it
# means building it. Skipped when a stamp says the same tarball, header and flags were built already.
#   Tests/Interop/build-mpich.sh WORK_DIR    (WORK_DIR/xpmem must hold `make -C libxpmem install`)
# The tarball is downloaded once from Debian's archive and checked against the checksum Debian's
# source package (mpich_4.0.2-3.dsc) gives; MPICH_TARBALL=PATH uses a local copy instead.
set -euo pipefail
work=$(realpath -m "${1:?usage: build-mpich.sh WORK_DIR}")
url=http://deb.debian.org/debian/pool/main/m/mpich/mpich_4.0.2.orig.tar.xz
sha256=b27039f964afeb6b8a3e009c56b441cbe368c26d6d6476ad3bb7190996875860
tarball=${MPICH_TARBALL:-$work/mpich_4.0.2.orig.tar.xz}
xpmem=$work/xpmem
mpich=$work/mpich
# ch4:ucx over Debian's UCX (libucx-dev) for ranks on other nodes; ranks on one node use the posix
# shared-memory module and, for messages of 4 KiB and more, the xpmem module: the path under test.
# dataloop rather than yaksa, and no Fortran, C++ bindings or ROMIO: they take most of the build time
# and play no part in the shared-memory path.
flags=(--prefix="$mpich" --with-device=ch4:ucx --with-ucx=/usr --with-ch4-shmmods=posix,xpmem
       --with-xpmem="$xpmem" --with-datatype-engine=dataloop --enable-fortran=no --disable-cxx
       --disable-romio --disable-doc --enable-fast=O2 --with-pm=hydra)

[ -f "$xpmem/include/xpmem.h" ] || { echo "build-mpich: $xpmem holds no installed libxpmem" >&2; exit 1; }
if [ ! -f "$tarball" ]; then
    [ -z "${MPICH_TARBALL:-}" ] || { echo "build-mpich: no MPICH source at $tarball" >&2; exit 1; }
    mkdir -p "$work"
    curl -fsSL --retry 3 -o "$tarball.part" "$url" \
        || { rm -f "$tarball.part"; echo "build-mpich: cannot download $url" >&2; exit 1; }
    mv "$tarball.part" "$tarball"
fi
if [ "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$sha256" ]; then
    echo "build-mpich: $tarball is not Debian's mpich_4.0.2.orig.tar.xz (checksum differs)" >&2
    exit 1
fi
stamp=$work/mpich.stamp
want=$( { echo "$sha256"; sha256sum "$xpmem/include/xpmem.h" | cut -d' ' -f1; printf '%s\n' "${flags[@]}"; } |
        sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$mpich/bin/mpiexec" ]; then
    echo "build-mpich: MPICH is up to date in $mpich"
    exit 0
fi

rm -rf "$work/mpich-src" "$mpich" "$stamp"
mkdir -p "$work/mpich-src"
tar xJf "$tarball" -C "$work/mpich-src"
source_dir=$(find "$work/mpich-src" -mindepth 1 -maxdepth 1 -type d | head -n 1)
log=$work/mpich-build.log
echo "build-mpich: building $(basename "$source_dir") with --with-xpmem=$xpmem (minutes; log: $log)"
(
    cd "$source_dir"
    ./configure "${flags[@]}"
    make -j"$(nproc)"
    make install
) >"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "build-mpich: the build failed; see $log" >&2; exit 1; }
# configure drops the module quietly when it cannot use libxpmem: insist on it here.
# (Without the module the install is removed: the checks and figures must not run on it.)
grep -q 'xpmem_attach' <(nm -D "$mpich/lib/libmpi.so" 2>/dev/null) \
    || { rm -rf "$mpich"; echo "build-mpich: MPICH was built without its xpmem module; see $log" >&2; exit 1; }
rm -rf "$work/mpich-src"
echo "$want" >"$stamp"
echo "build-mpich: MPICH installed in $mpich"
