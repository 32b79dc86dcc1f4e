# The two commands: `make dev` runs Pylon, `make test` checks everything.
#
# Builds go to a target directory outside the clone, so a fresh clone (and CI)
# reuses the slow RocksDB build instead of starting cold.
CARGO_TARGET_DIR ?= $(HOME)/.cache/pylon/target
export CARGO_TARGET_DIR
CARGO ?= cargo
SHELL := bash
.SHELLFLAGS := -o pipefail -c

.PHONY: dev test bench chaos bootstrap fmt build

bootstrap:
	@scripts/bootstrap

# Every build uses the same target selection (--workspace --all-targets): build
# dependencies are feature-unified per selection, and a different selection
# would rebuild RocksDB from scratch.
build: bootstrap
	$(CARGO) build --workspace --all-targets

## Run Pylon locally: a single-node control plane in .pylon/dev (admin gRPC on 127.0.0.1:9090,
## metrics on http://127.0.0.1:9464/metrics).
dev: build
	$(CARGO_TARGET_DIR)/debug/pylon dev --ops-listen 127.0.0.1:9464

## Formatting, lints, docs, then every test (unit, property and end-to-end with real processes).
test: bootstrap
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace 2>&1 | tee $(CARGO_TARGET_DIR)/test.log
	@awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "all tests: %d passed, %d failed\n", passed, failed }' $(CARGO_TARGET_DIR)/test.log

## Benchmarks against peers measured in the same run (see docs/performance.md),
## of the `dist` profile (fat LTO, one codegen unit) built with profile-guided
## optimisation by scripts/pgo-build (two builds and a short training load).
## PGO=0: the plain `dist` build instead; PYLON_BIN=FILE: that binary.
PGO ?= 1
bench:
	@scripts/bootstrap bench
	if [[ -n "$${PYLON_BIN:-}" ]]; then bin=$$PYLON_BIN; \
	elif [[ "$(PGO)" == 0 ]]; then $(CARGO) build --profile dist --bin pylon && bin=$(CARGO_TARGET_DIR)/dist/pylon; \
	else bin=$$(CARGO=$(CARGO) scripts/pgo-build); fi && \
	PYLON_BIN=$$bin $(CARGO) bench -p pylon-tests --bench perf

## The linearizability check under kills, pauses and partitions, longer and
## wider than in `make test`: 5 control-plane nodes for 120 s (override with
## PYLON_CHAOS_NODES / PYLON_CHAOS_SECONDS). See docs/control-plane.md.
chaos: build
	PYLON_CHAOS_NODES=$${PYLON_CHAOS_NODES:-5} PYLON_CHAOS_SECONDS=$${PYLON_CHAOS_SECONDS:-120} \
		$(CARGO) test -p pylon-tests --test it linearizable -- --nocapture

fmt:
	$(CARGO) fmt --all
