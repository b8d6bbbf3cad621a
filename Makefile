# The two commands of the README:  `make run`  and  `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PRESET ?= default

.PHONY: env run results build notebooks test test-fast paper-dry browser-deps lab clean-runs

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # the CPU wheel first: an unpinned torch pulls CUDA
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

env: $(BIN)/.installed

# Chromium for the real-browser tests (Debian/Ubuntu; needs root or sudo)
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

# Build everything on the preset, execute every notebook top to bottom (timings table at the end),
# then write the feature atlas: a static site that opens offline (runs/<preset>/atlas/index.html)
# Each step is timed into runs/<preset>/make-run.json (wall time, peak memory, exit status, commit, machine),
# which `make results` reads into docs/results.md with everything the build measured
RECORD = $(BIN)/python -m mono_utils timed --record runs/$(PRESET)/make-run.json
run: env
	@mkdir -p runs/$(PRESET)
	$(RECORD) --step build --log runs/$(PRESET)/build.log -- $(BIN)/python -m mono_utils build --preset $(PRESET) --jobs 2
	$(RECORD) --step notebooks -- $(BIN)/python -m mono_utils run-notebooks --preset $(PRESET)
	$(RECORD) --step atlas -- $(BIN)/python -m mono_utils atlas --preset $(PRESET) --sae B/1 --sae paper2023 --out runs/$(PRESET)/atlas

# docs/results.md from what `make run` built and recorded (every figure the README and the lessons quote)
results: env
	$(BIN)/python -m mono_utils report --preset $(PRESET)

# The whole test suite: unit tests, every notebook on `smoke`, real-browser widget tests
test: env browser-deps
	$(BIN)/python -m pytest -q --durations=15

test-fast: env
	$(BIN)/python -m pytest -q -m "not slow and not browser"

# The paper preset's shapes end to end on a CPU (token budgets cut, mono_utils/pipeline/presets.py): every stage in its own
# process, timed, with its peak memory; a separate CI step, not part of `make test`
paper-dry: env
	$(BIN)/python benchmarks/paper_dry.py --artifacts data/artifacts-paper-dry

lab: env
	$(BIN)/jupyter lab notebooks/

clean-runs:
	rm -rf runs/
