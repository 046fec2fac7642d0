# zkcoord: every target says what it does. `make test` and `make demo` install what they need
# (as root, via scripts/install-deps.sh).

SHELL := /bin/bash
CARGO ?= cargo
# --locked whenever the lock file exists, so CI builds exactly what was committed.
LOCKED := $(if $(wildcard Cargo.lock),--locked,)
# 2 cores: two tests at a time. Each integration test starts its own ZooKeeper (1 or 3 JVMs)
# and daemons, so more parallelism only makes them fight for CPU and stretch timeouts.
TEST_THREADS ?= 2

.PHONY: all build test demo packages clean deps fuzz

all: build

build:
	@echo "==> build: $(CARGO) build --release $(LOCKED)"
	$(CARGO) build --release $(LOCKED)

deps:
	@echo "==> deps: scripts/install-deps.sh (ZooKeeper and Java from Debian)"
	bash scripts/install-deps.sh

# The packages are built first: tests/packages.rs reads them and tests/systemd_e2e.rs installs
# the .deb under a real systemd.
test: deps packages
	@echo "==> test: $(CARGO) test $(LOCKED) -- --test-threads=$(TEST_THREADS)"
	$(CARGO) test $(LOCKED) -- --test-threads=$(TEST_THREADS)
	$(MAKE) fuzz

# Each fuzz target (config parser, publish requests, legacy trigger, bundle unpacking) for FUZZ_SECONDS (60).
fuzz:
	@echo "==> fuzz: scripts/fuzz.sh (each target for $${FUZZ_SECONDS:-60}s)"
	bash scripts/fuzz.sh

demo: deps
	@echo "==> demo: scripts/demo.sh (release build, a local ZooKeeper, zkcoordd, zkcoordctl)"
	bash scripts/demo.sh

packages:
	@echo "==> packages: scripts/packages.sh (.deb and .rpm into target/)"
	bash scripts/packages.sh

clean:
	@echo "==> clean: $(CARGO) clean"
	$(CARGO) clean
