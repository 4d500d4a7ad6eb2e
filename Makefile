# The project's commands. `make demo` runs the main job; `make test` runs every test.
SWIFT ?= swift
RELEASE_DIR := .build/release

.PHONY: all deps build release demo test bench clean

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

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# A private broker, one process exporting a segment and two importing it.
demo: release
	@Examples/demo.sh $(RELEASE_DIR)

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test

bench: release
	$(RELEASE_DIR)/xpmem-bench all

clean:
	rm -rf .build
