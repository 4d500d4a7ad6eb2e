#!/bin/bash
# Runs every libxpmem test and prints one line per check, then "N passed, N failed" alone on the
# last line; exits non-zero if anything failed. Usage: tests/run-tests.sh BUILD_DIR (XPMEMD=... set).
build=${1:-build}
passed=0
failed=0

count() { # OUTPUT
    local line
    line=$(printf '%s\n' "$1" | tail -n 1)
    if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2]))
    else
        echo "FAILED a test program ended without its count (crashed?)"
        failed=$((failed + 1))
    fi
}

check() { # NAME COMMAND...
    local name=$1
    shift
    if "$@"; then echo "ok $name"; passed=$((passed + 1)); else echo "FAILED $name"; failed=$((failed + 1)); fi
}

only_api_exported() {
    local others
    others=$(nm -D --defined-only "$build/libxpmem.so.0" | awk '{ print $3 }' | grep -v '^xpmem_')
    [ -z "$others" ] || { echo "   exported besides xpmem_*: $others"; return 1; }
    for symbol in xpmem_init xpmem_version xpmem_make xpmem_remove xpmem_get xpmem_release xpmem_attach xpmem_detach; do
        nm -D --defined-only "$build/libxpmem.so.0" | grep -q " T $symbol\$" || { echo "   missing $symbol"; return 1; }
    done
}

only_libc_needed() {
    local needed
    needed=$(readelf -d "$build/libxpmem.so.0" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
    [ "$needed" = "libc.so.6 " ] || { echo "   needs: $needed"; return 1; }
    ! ldd "$build/libxpmem.so.0" | grep -qi swift
}

soname_is_libxpmem_so_0() {
    readelf -d "$build/libxpmem.so.0" | grep -q 'Library soname: \[libxpmem.so.0\]'
}

check "the library exports exactly the xpmem_* API" only_api_exported
check "the library needs only libc (no Swift runtime)" only_libc_needed
check "the soname is libxpmem.so.0" soname_is_libxpmem_so_0

# make install into a temporary prefix with xpmemd beside it; a program built with pkg-config
# and run with only the prefix on LD_LIBRARY_PATH finds and starts PREFIX/bin/xpmemd itself.
installed_prefix_works() {
    local prefix socket status pid
    prefix=$(mktemp -d /tmp/libxpmem-install-XXXXXX)
    socket=$prefix/run/xpmemd.sock
    mkdir -p "$prefix/bin" "$prefix/run" && chmod 700 "$prefix/run"
    make -s -C "$(dirname "$0")/.." install PREFIX="$prefix" >/dev/null || return 1
    cp "$XPMEMD" "$prefix/bin/xpmemd"
    # shellcheck disable=SC2046
    cc -o "$prefix/program" "$(dirname "$0")/installed_program.c" \
        $(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs cray-xpmem) || return 1
    env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$prefix/lib" XPMEM_SOCKET="$socket" "$prefix/program" >/dev/null
    status=$?
    LD_LIBRARY_PATH="$prefix/lib" ldd "$prefix/program" | grep -q "$prefix/lib/libxpmem.so.0" || status=1
    # The broker the library started: the process whose command line names our socket.
    for pid in $(grep -lsa -- "$socket" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
        [ "$pid" != "$$" ] && [ "$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | cut -d' ' -f1)" = "$prefix/bin/xpmemd" ] \
            && kill "$pid"
    done
    rm -rf "$prefix"
    return $status
}
check "make install; pkg-config cray-xpmem; the installed library alone starts PREFIX/bin/xpmemd" installed_prefix_works

output=$("$build/tests/wire-tests")
printf '%s\n' "$output" | sed '$d'
count "$output"

# The mapping walk: the kernel's PROCMAP_QUERY against the text of /proc/self/maps (no broker).
output=$("$build/tests/maps-walk-tests")
printf '%s\n' "$output" | sed '$d'
count "$output"

# The attachment table and its indexes, with thousands of windows at made-up addresses (no broker).
output=$(timeout 120 "$build/tests/attachments-tests")
printf '%s\n' "$output" | sed '$d'
count "$output"

output=$(XPMEMD="$XPMEMD" timeout 120 "$build/tests/xpmem-tests")
printf '%s\n' "$output" | sed '$d'
count "$output"

output=$(XPMEMD="$XPMEMD" timeout 120 "$build/tests/address-space-tests")
printf '%s\n' "$output" | sed '$d'
count "$output"

# Again with hooks like UCX's memory hooks preloaded (tests/memory_hooks.c): MPI stacks replace
# mmap, munmap, mremap and madvise in every library, and libxpmem must not call them.
output=$(LD_PRELOAD="$build/tests/libmemory-hooks.so" XPMEMD="$XPMEMD" timeout 120 "$build/tests/address-space-tests")
printf '%s\n' "$output" | sed '$d' | sed -E 's/^(ok|FAILED) /\1 (memory hooks preloaded) /'
count "$output"
# A preload the loader could not load is ignored with a warning: the hooks test then skips.
check "the stand-in memory hooks were loaded in the run above" \
    test -z "$(printf '%s\n' "$output" | grep 'needs tests/memory_hooks.c preloaded')"

# The attachment cache; its memory pressure test makes a memory cgroup (root) or says why it skips.
output=$(XPMEMD="$XPMEMD" timeout 300 "$build/tests/attach-cache-tests")
printf '%s\n' "$output" | sed '$d'
count "$output"

# A short soak (make chaos runs a long one): four rounds, one of each kind of death, with a fixed
# seed so that a failure here can be replayed (make chaos picks a new one each time).
output=$(XPMEMD="$XPMEMD" CHAOS_ROUNDS=4 CHAOS_SEED=20261130 timeout 300 "$build/tests/chaos")
printf '%s\n' "$output" | sed '$d'
count "$output"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
