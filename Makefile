# Two commands on a fresh Linux box with Python >= 3.10:  make demo  |  make test
# Each creates .venv when missing and installs the project with its extras under constraints.txt.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench install system clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

system:
	.ci/system-deps

test: $(STAMP) system
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
