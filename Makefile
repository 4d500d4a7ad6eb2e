# The project's commands. `make demo` runs the main job; `make test` runs every test.
SWIFT ?= swift
RELEASE_DIR := .build/release
# bash with pipefail, so that `COMMAND | tee LOG` in a recipe fails when COMMAND does.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: all deps numa-deps interop-deps build release demo test unit-and-integration-test numa-test numa-bench bench \
	chaos interop interop-checks interop-bench fuzz fuzz-build fuzz-seeds install clean

all: build

# System packages the build needs. As root they are installed with apt-get; otherwise the exact
# command to run is printed.
# (libnuma for the broker's NUMA placement; pkg-config for libxpmem's install test.)
deps:
	@if [ -f /usr/include/numa.h ] && command -v pkg-config >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "make: installing what the build needs with apt-get: libnuma-dev pkg-config"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnuma-dev pkg-config >/dev/null; \
	else \
	  echo "make: libnuma-dev or pkg-config is missing. Run: sudo apt-get install -y libnuma-dev pkg-config" >&2; exit 1; \
	fi

# What the emulated NUMA machines need (Tests/NUMAMachine): qemu, Debian's kernel, busybox, cpio.
NUMA_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static cpio numactl
numa-deps:
	@if command -v qemu-system-x86_64 >/dev/null && command -v cpio >/dev/null && [ -x /bin/busybox ] \
	   && command -v numactl >/dev/null && ls /boot/vmlinuz-* >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "make: installing what the emulated NUMA machines need: $(NUMA_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(NUMA_PACKAGES) >/dev/null; \
	else \
	  echo "make: the NUMA checks run in an emulated machine. Run: sudo apt-get install -y $(NUMA_PACKAGES)" >&2; exit 1; \
	fi

# What the interop checks need: UCX's release tarball carries no configure script (autoconf,
# automake, libtool), UCX has C++ parts (g++), and Debian's Open MPI runs the MPI examples. MPICH
# rebuilt with its xpmem module needs Debian's UCX and hwloc headers and curl to fetch its source.
# Missing and not root: a FAIL line with the exact command, which `make test` counts as a failure.
INTEROP_PACKAGES := autoconf automake libtool g++ make xz-utils openmpi-bin libopenmpi-dev mpich libmpich-dev \
	libucx-dev libhwloc-dev curl
interop-deps:
	@if command -v autoreconf >/dev/null && command -v automake >/dev/null && command -v libtoolize >/dev/null \
	   && command -v g++ >/dev/null && command -v xz >/dev/null && command -v mpicc >/dev/null \
	   && command -v mpirun >/dev/null && command -v mpicc.mpich >/dev/null && command -v mpirun.mpich >/dev/null \
	   && [ -f /usr/include/ucp/api/ucp.h ] && [ -f /usr/include/hwloc.h ] && command -v curl >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "make: installing what the interop checks need: $(INTEROP_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(INTEROP_PACKAGES) >/dev/null; \
	else \
	  echo "FAIL interop prerequisites are installed: some are missing. Run: sudo apt-get install -y $(INTEROP_PACKAGES)"; exit 1; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# A private broker, one process exporting a segment and two importing it.
demo: release
	@Examples/demo.sh $(RELEASE_DIR)

# Every test: unit and integration tests on this machine, the C library's tests, unmodified UCX and
# Open MPI on the C library (interop), then the NUMA checks in emulated
# 2-node and 4-node machines (this machine has one node; see Tests/NUMAMachine). Every step runs
# even when an earlier one failed, and keeps its whole output in $(TEST_LOGS). The last line counts
# every test, skip and NUMA check, "N passed, N failed, N skipped" alone on its line (CI reads it);
# the exit status is non-zero if anything failed.
test: deps numa-deps
	@rm -rf $(TEST_LOGS) && mkdir -p $(TEST_LOGS)
	@if ! $(SWIFT) build --build-tests; then \
	  echo "make test: the build failed, so no test ran"; echo "0 passed, 1 failed, 0 skipped"; exit 1; \
	fi
	@$(call test-step,swift-test,$(SWIFT) test --skip-build,$(COUNT_SWIFT_TESTS))
	@$(call test-step,fuzz,$(MAKE) -s fuzz FUZZ_SECONDS=$(FUZZ_TEST_SECONDS),$(COUNT_FUZZ_RUNS))
	@$(call test-step,libxpmem,$(MAKE) -s -C libxpmem test XPMEMD=$(DEBUG_DIR)/xpmemd,$(COUNT_C_TESTS))
	@$(call test-step,interop,$(MAKE) -s interop-checks INTEROP_XPMEMD=$(DEBUG_DIR)/xpmemd,$(COUNT_INTEROP_CHECKS))
	@$(call test-step,numa-2-nodes,$(call numa-machine,2),$(COUNT_NUMA_CHECKS))
	@$(call test-step,numa-4-nodes,$(call numa-machine,4),$(COUNT_NUMA_CHECKS))
	@cat $(TEST_LOGS)/*.counts | awk '{ passed += $$1; failed += $$2; skipped += $$3 } \
	  END { print passed " passed, " failed " failed, " skipped " skipped"; exit (failed > 0) }'

unit-and-integration-test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test

TEST_LOGS := $(CURDIR)/.build/test-logs

# $(call test-step,NAME,COMMAND,COUNTER): runs COMMAND with its output shown and kept in
# $(TEST_LOGS)/NAME.log, and writes what COUNTER finds in that log, "passed failed skipped", to
# NAME.counts. A COMMAND that fails without its log naming a failure (a crash, a machine that did
# not boot) counts as one failure, so a failed step never adds up to "0 failed".
test-step = $(2) 2>&1 | tee $(TEST_LOGS)/$(1).log; status=$$?; \
	read -r passed failed skipped < <($(3) $(TEST_LOGS)/$(1).log); \
	if [ $$status -ne 0 ] && [ $$failed -eq 0 ]; then \
	  failed=1; echo "make test: $(1) failed (status $$status) without naming a failed test; see $(TEST_LOGS)/$(1).log"; \
	fi; \
	echo "$$passed $$failed $$skipped" >$(TEST_LOGS)/$(1).counts

# swift-testing prints one line per test ("✔ Test x passed after 0.1 seconds.", "✘ Test x failed
# after …", "➜ Test x skipped: …"; a parameterized test is one test) and XCTest one per test case
# ("Test Case 'x' passed (0.1 seconds)"); their run summaries are not counted again.
COUNT_SWIFT_TESTS := awk '{ gsub(/\033\[[0-9;]*m/, "") } \
	/^[^ ]+ Test run with / { next } \
	/^[^ ]+ Test .* passed after [0-9.]+ seconds/ || /^Test Case .* passed \(/ { passed++; next } \
	/^[^ ]+ Test .* failed after [0-9.]+ seconds/ || /^Test Case .* failed \(/ { failed++; next } \
	/^[^ ]+ Test .* skipped(: .*|\.)$$/ || /^Test Case .* skipped \(/ { skipped++; next } \
	END { print passed + 0, failed + 0, skipped + 0 }'

# libxpmem's tests (real processes, a real broker) end with "N passed, N failed" alone on a line.
COUNT_C_TESTS := awk '/^[0-9]+ passed, [0-9]+ failed$$/ { passed = $$1; failed = $$3 } END { print passed + 0, failed + 0, 0 }'

# `make fuzz` ends with "fuzz: N executions, N crashes in N s"; a run with no crash is one passed test.
COUNT_FUZZ_RUNS := awk '/^fuzz: [0-9]+ executions, [0-9]+ crashes/ { ran = 1; failed = ($$4 > 0) } \
	END { print (ran && !failed) ? 1 : 0, (ran && failed) ? 1 : 0, 0 }'

# xpmem-numa-check prints one line per check: "PASS what" or "FAIL what: why".
COUNT_NUMA_CHECKS := awk '/^PASS / { passed++ } /^FAIL / { failed++ } END { print passed + 0, failed + 0, 0 }'

# The interop checks print "PASS what" or "FAIL what: why", one line each, like the NUMA checks.
COUNT_INTEROP_CHECKS := $(COUNT_NUMA_CHECKS)

DEBUG_DIR := $(CURDIR)/.build/debug
VM := Tests/NUMAMachine/run-in-vm.sh
VM_FILES := --file $(DEBUG_DIR)/xpmem-numa-check --file $(DEBUG_DIR)/xpmemd --file $(DEBUG_DIR)/xpmem-probe \
	--file $(DEBUG_DIR)/xpmemctl --file $(DEBUG_DIR)/xprun --file $(DEBUG_DIR)/migrate

# $(call numa-machine,NODES): every NUMA check in an emulated machine with NODES nodes. The terminal
# gets the checks' lines; the machine's whole console goes to $(TEST_LOGS)/numa-NODES-nodes.console.
numa-machine = $(VM) --nodes $(1) --memory-per-node 512 --console $(TEST_LOGS)/numa-$(1)-nodes.console $(VM_FILES) \
	-- $(DEBUG_DIR)/xpmem-numa-check all

numa-test: deps numa-deps
	$(SWIFT) build
	@mkdir -p $(TEST_LOGS)
	$(call numa-machine,2)
	$(call numa-machine,4)
	@echo "make: the NUMA checks passed in the emulated 2-node and 4-node machines"

# Migration figures, measured inside an emulated 2-node machine (NUMA_BENCH_ARGS="" for a table).
NUMA_BENCH_ARGS ?= --json
numa-bench: release numa-deps
	$(VM) --nodes 2 --memory-per-node 1536 --cpus-per-node 1 --timeout 1200 \
	  --file $(CURDIR)/$(RELEASE_DIR)/xpmem-bench --file $(CURDIR)/$(RELEASE_DIR)/xpmemd \
	  -- $(CURDIR)/$(RELEASE_DIR)/xpmem-bench migrate $(NUMA_BENCH_ARGS)

bench: release
	$(RELEASE_DIR)/xpmem-bench all

# The soak: exporters, read-only and read-write importers and the broker killed at random points
# under attach/read/write load (libxpmem/tests/chaos.c says what each round checks). `make test` runs
# four rounds; CHAOS_ROUNDS=N and CHAOS_SEED=S (printed by every run) choose another soak.
CHAOS_ROUNDS ?= 200
chaos: build
	$(MAKE) -s -C libxpmem chaos XPMEMD=$(DEBUG_DIR)/xpmemd CHAOS_ROUNDS=$(CHAOS_ROUNDS)

# Unmodified UCX 1.13.1 (built once from its release tarball against libxpmem installed in
# $(INTEROP_DIR)/xpmem, rebuilt only when the tarball, xpmem.h or its flags change), Debian's
# Open MPI and MPICH on libxpmem: ucx_info, ucx_perftest put/get over the xpmem transport alone, the MPI
# examples over pml ucx (and MPICH's UCX netmod) with UCX_TLS=xpmem,self, and the examples under
# MPICH 4.0.2 rebuilt with its own XPMEM module (built once, like UCX). See Tests/Interop.
INTEROP_DIR := $(CURDIR)/.build/interop
INTEROP_XPMEMD ?= $(DEBUG_DIR)/xpmemd
interop: deps build
	@$(MAKE) -s interop-checks INTEROP_XPMEMD=$(INTEROP_XPMEMD)

# The checks alone, on a broker already built (`make test` runs this as its interop step).
interop-checks: interop-deps
	@$(MAKE) -s -C libxpmem install PREFIX=$(INTEROP_DIR)/xpmem
	@Tests/Interop/build-ucx.sh $(INTEROP_DIR) \
	  || { echo "FAIL UCX builds --with-xpmem=$(INTEROP_DIR)/xpmem (log: $(INTEROP_DIR)/ucx-build.log)"; exit 1; }
	@# A failed MPICH build shows as the FAIL line of its checks (run-interop.sh); the others still run.
	@Tests/Interop/build-mpich.sh $(INTEROP_DIR) || true
	@Tests/Interop/run-interop.sh $(INTEROP_DIR) $(INTEROP_XPMEMD)

# Figures: Open MPI + UCX + libxpmem against Open MPI's vader with CMA, and MPICH's own XPMEM module
# on libxpmem against the same MPICH without it, interleaved pairs, as JSON (INTEROP_PAIRS=5 by
# default). Uses the release broker.
INTEROP_PAIRS ?= 5
# Only the JSON goes to standard output: the builds' messages go to standard error.
interop-bench: deps interop-deps
	@$(MAKE) -s release >&2
	@$(MAKE) -s -C libxpmem install PREFIX=$(INTEROP_DIR)/xpmem >&2
	@Tests/Interop/build-ucx.sh $(INTEROP_DIR) >&2
	@Tests/Interop/build-mpich.sh $(INTEROP_DIR) >&2 || echo "interop-bench: no MPICH with its xpmem module; its figures are left out" >&2
	@Tests/Interop/bench-interop.sh $(INTEROP_DIR) $(CURDIR)/$(RELEASE_DIR)/xpmemd $(INTEROP_PAIRS)

# Installs the broker, its tools and the systemd units for a system-wide broker (socket activation):
#   make install PREFIX=/usr/local [DESTDIR=/staging]
#   systemctl enable --now xpmemd.socket
PREFIX ?= /usr/local
BINDIR := $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
install: release
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(RELEASE_DIR)/xpmemd $(RELEASE_DIR)/xpmemctl $(RELEASE_DIR)/xprun $(DESTDIR)$(BINDIR)/
	install -m 0644 Packaging/systemd/xpmemd.socket $(DESTDIR)$(UNITDIR)/
	sed 's|@BINDIR@|$(BINDIR)|g' Packaging/systemd/xpmemd.service.in > $(DESTDIR)$(UNITDIR)/xpmemd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/xpmemd.service
	@if [ -f libxpmem/Makefile ]; then $(MAKE) -C libxpmem install PREFIX=$(PREFIX) DESTDIR=$(DESTDIR); fi

clean:
	rm -rf .build

# The fuzz target (Tests/Fuzz): the frame decoder and the broker core under libFuzzer, with
# AddressSanitizer. It is built by swiftc here, not by SwiftPM, so that `swift build` and `swift test`
# never see its instrumentation or its libFuzzer `main`: XPMEMWire and XPMEMBrokerCore are compiled
# again as modules of their own (with -enable-testing: the invariants read the core's internal state),
# then linked with the target. Everything lands in $(FUZZ_DIR); a crash leaves its reproducer there.
FUZZ_DIR := $(CURDIR)/.build/fuzz
FUZZ_BINARY := $(FUZZ_DIR)/xpmem-fuzz
FUZZ_CORPUS := Tests/Fuzz/corpus
FUZZ_SECONDS ?= 60
# The short run `make test` includes.
FUZZ_TEST_SECONDS ?= 25
# One in-process fuzzer by default: libFuzzer's fork mode (FUZZ_JOBS=2) restarts its workers every few
# seconds, which costs more than a second core gains in a short run; it pays off in long ones.
FUZZ_JOBS ?= 1
SWIFTC ?= swiftc
# A long campaign may drop AddressSanitizer (FUZZ_SANITIZE=fuzzer, with its own FUZZ_DIR) for about
# twice the executions a second; the invariants are checked either way, and the wire decoder's unsafe
# reads stay covered by the AddressSanitizer build `make test` runs.
FUZZ_SANITIZE ?= fuzzer,address
FUZZ_SWIFTFLAGS := -swift-version 6 -enable-upcoming-feature ExistentialAny -enable-upcoming-feature MemberImportVisibility \
	-warnings-as-errors -O -g -sanitize=$(FUZZ_SANITIZE) -parse-as-library -I $(FUZZ_DIR)/modules
# gold warns about ASan's local helper symbols on every link; nothing to act on.
FUZZ_LINK_NOISE := grep -v "Cannot export local symbol '__asan" >&2 || true

fuzz-build: $(FUZZ_BINARY)

$(FUZZ_DIR)/XPMEMWire.o: $(wildcard Sources/XPMEMWire/*.swift)
	@mkdir -p $(FUZZ_DIR)/modules
	$(SWIFTC) $(FUZZ_SWIFTFLAGS) -enable-testing -wmo -module-name XPMEMWire -emit-module \
	  -emit-module-path $(FUZZ_DIR)/modules/XPMEMWire.swiftmodule -c $^ -o $@

$(FUZZ_DIR)/XPMEMBrokerCore.o: $(wildcard Sources/XPMEMBrokerCore/*.swift) $(FUZZ_DIR)/XPMEMWire.o
	$(SWIFTC) $(FUZZ_SWIFTFLAGS) -enable-testing -wmo -module-name XPMEMBrokerCore -emit-module \
	  -emit-module-path $(FUZZ_DIR)/modules/XPMEMBrokerCore.swiftmodule -c $(filter %.swift,$^) -o $@

# With -g swiftc also writes the module it wraps for the debugger into its working directory: it runs
# in $(FUZZ_DIR), not in the working tree.
$(FUZZ_BINARY): $(wildcard Tests/Fuzz/*.swift) $(FUZZ_DIR)/XPMEMWire.o $(FUZZ_DIR)/XPMEMBrokerCore.o
	cd $(FUZZ_DIR) && $(SWIFTC) $(FUZZ_SWIFTFLAGS) -wmo -module-name XPMEMFuzz $(abspath $^) -o $@ 2> >($(FUZZ_LINK_NOISE))

# Regenerates the seed corpus from the encoder (Tests/Fuzz/SeedCorpus.swift).
fuzz-seeds: $(FUZZ_BINARY)
	rm -rf $(FUZZ_CORPUS) && XPMEM_FUZZ_WRITE_SEEDS=$(FUZZ_CORPUS) $(FUZZ_BINARY)

# Fuzzes for FUZZ_SECONDS on FUZZ_JOBS cores, starting from the seeds and what earlier runs found
# ($(FUZZ_DIR)/corpus, not in git), and ends with "fuzz: N executions, N crashes in N s". Fails when
# anything crashed; reproducers are $(FUZZ_DIR)/crash-*, replayed by `$(FUZZ_BINARY) FILE`.
fuzz: $(FUZZ_BINARY)
	@Tests/Fuzz/run-fuzzer.sh $(FUZZ_BINARY) $(FUZZ_DIR) $(FUZZ_CORPUS) $(FUZZ_SECONDS) $(FUZZ_JOBS)
