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

output=$("$build/tests/wire-tests")
printf '%s\n' "$output" | sed '$d'
count "$output"

output=$(XPMEMD="$XPMEMD" timeout 120 "$build/tests/xpmem-tests")
printf '%s\n' "$output" | sed '$d'
count "$output"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
