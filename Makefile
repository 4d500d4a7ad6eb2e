# The project's commands. `make demo` runs the main job; `make test` runs every test.
SWIFT ?= swift
RELEASE_DIR := .build/release

.PHONY: all deps numa-deps build release demo test unit-and-integration-test numa-test numa-bench bench clean

all: build

# System packages the build needs. As root they are installed with apt-get; otherwise the exact
# command to run is printed.
deps:
	@if [ -f /usr/include/numa.h ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "make: libnuma-dev is missing; installing it with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnuma-dev >/dev/null; \
	else \
	  echo "make: libnuma-dev is missing. Run: sudo apt-get install -y libnuma-dev" >&2; exit 1; \
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

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# A private broker, one process exporting a segment and two importing it.
demo: release
	@Examples/demo.sh $(RELEASE_DIR)

# Every test: unit and integration tests on this machine, then the NUMA checks in emulated
# 2-node and 4-node machines (this machine has one node; see Tests/NUMAMachine).
test: unit-and-integration-test numa-test

unit-and-integration-test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test

DEBUG_DIR := $(CURDIR)/.build/debug
VM := Tests/NUMAMachine/run-in-vm.sh
VM_FILES := --file $(DEBUG_DIR)/xpmem-numa-check --file $(DEBUG_DIR)/xpmemd --file $(DEBUG_DIR)/xpmem-probe \
	--file $(DEBUG_DIR)/xpmemctl --file $(DEBUG_DIR)/xprun --file $(DEBUG_DIR)/migrate

numa-test: deps numa-deps
	$(SWIFT) build
	$(VM) --nodes 2 --memory-per-node 512 $(VM_FILES) -- $(DEBUG_DIR)/xpmem-numa-check all
	$(VM) --nodes 4 --memory-per-node 512 $(VM_FILES) -- $(DEBUG_DIR)/xpmem-numa-check all
	@echo "make: the NUMA checks passed in the emulated 2-node and 4-node machines"

# Migration figures, measured inside an emulated 2-node machine (NUMA_BENCH_ARGS="" for a table).
NUMA_BENCH_ARGS ?= --json
numa-bench: release numa-deps
	$(VM) --nodes 2 --memory-per-node 1536 --cpus-per-node 1 --timeout 1200 \
	  --file $(CURDIR)/$(RELEASE_DIR)/xpmem-bench --file $(CURDIR)/$(RELEASE_DIR)/xpmemd \
	  -- $(CURDIR)/$(RELEASE_DIR)/xpmem-bench migrate $(NUMA_BENCH_ARGS)

bench: release
	$(RELEASE_DIR)/xpmem-bench all

clean:
	rm -rf .build
