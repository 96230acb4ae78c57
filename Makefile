# Two commands on a fresh Linux box with Python >= 3.10:  make demo  |  make test
# Each creates .venv when missing and installs the project with its extras under constraints.txt.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-kernels test-device lint format bench install system clean check-aarch64

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

# the whole story (examples/demo.py); the radio simulator is C: a box without a compiler gets `make system` first
demo: $(STAMP)
	@command -v cc >/dev/null 2>&1 || $(MAKE) system
	$(BIN)/python examples/demo.py

system:
	.ci/system-deps

# the import contracts first (seconds), then the suite
test: $(STAMP) system
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

# the learning tests again, under CPU kernel sets other than this machine's defaults (float results differ)
test-kernels: $(STAMP) system
	.ci/other-kernels $(BIN)/python -m pytest -q -m learning

# the suite as a device install sees it: numpy, the runtimes and the links, never torch or the exporters
# (plus the operator's monitor and the embedded broker, which the telemetry tests run beside the daemon)
test-device: system
	test -x .venv-device/bin/python || $(PYTHON) -m venv .venv-device
	.venv-device/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt '.[device,monitor,demo]' pytest hypothesis websockets
	.venv-device/bin/python -m pytest -q -p no:cacheprovider

# installs and runs on a Raspberry Pi 4's CPU (arm64 bookworm under qemu-user, as root; rootfs in /var/tmp)
check-aarch64:
	scripts/check-aarch64

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/dqn_vs_sb3.py
	$(BIN)/python benchmarks/compression.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/stream_q.py
	$(BIN)/python benchmarks/stream_cartpole.py
	$(BIN)/python benchmarks/adaptation.py
	$(BIN)/python benchmarks/link.py
	$(BIN)/python benchmarks/daemon.py
	$(BIN)/python benchmarks/telemetry.py
	$(BIN)/python benchmarks/mcu.py
	$(BIN)/python benchmarks/fleet.py
	$(BIN)/python benchmarks/sweep.py
	$(BIN)/python benchmarks/dqn_variants.py

clean:
	rm -rf $(VENV) .venv-device runs .pytest_cache .ruff_cache .import_linter_cache firmware_bridge/firmware/build \
		firmware_bridge/firmware/cortex_m/build
