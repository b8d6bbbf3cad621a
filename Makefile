# The two commands of the README:  `make run`  and  `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PRESET ?= default

.PHONY: env run results build notebooks test test-fast paper-dry browser-deps atlas-js lab clean-runs

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

# The live atlas's browser libraries (onnxruntime-web, @huggingface/tokenizers), pinned by its
# package-lock.json; mono_utils/atlas/live.py copies them into every atlas it writes
ATLAS_JS := mono_utils/atlas/js
atlas-js: $(ATLAS_JS)/node_modules/.installed

$(ATLAS_JS)/node_modules/.installed: $(ATLAS_JS)/package.json $(ATLAS_JS)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; }
	cd $(ATLAS_JS) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# Build everything on the preset, execute every notebook top to bottom (timings table at the end),
# then write the feature atlas: a static site that opens offline (runs/<preset>/atlas/index.html)
# Each step is timed into runs/<preset>/make-run.json (wall time, peak memory, exit status, commit, machine),
# which `make results` reads into docs/results.md with everything the build measured
RECORD = $(BIN)/python -m mono_utils.runrecord --record runs/$(PRESET)/make-run.json
run: env atlas-js
	@mkdir -p runs/$(PRESET)
	$(RECORD) --step build --log runs/$(PRESET)/build.log -- $(BIN)/python -m mono_utils build --preset $(PRESET) --jobs 2
	$(RECORD) --step notebooks -- $(BIN)/python -m mono_utils run-notebooks --preset $(PRESET) --jobs 2
	$(RECORD) --step atlas -- $(BIN)/python -m mono_utils atlas --preset $(PRESET) --sae B/1 --sae paper2023 --out runs/$(PRESET)/atlas

# docs/results.md from what `make run` built and recorded (every figure the README and the lessons quote)
results: env
	$(BIN)/python -m mono_utils report --preset $(PRESET)

# The whole test suite: unit tests, every notebook on `smoke`, real-browser widget tests
test: env browser-deps atlas-js
	$(BIN)/python -m pytest -q --durations=15

test-fast: env
	$(BIN)/python -m pytest -q -m "not slow and not browser"

# The paper preset's shapes end to end on a CPU (token budgets cut, mono_utils/pipeline/presets.py): every stage in its own
# process, timed, with its peak memory; a separate CI step, not part of `make test`
paper-dry: env
	$(BIN)/python benchmarks/paper_dry.py --artifacts data/artifacts-paper-dry

lab: env
	$(BIN)/jupyter lab notebooks/

# A student's install (requirements-student.txt): what running the notebooks from an imported bundle needs,
# not what building or testing needs. STUDENT_PY: a Python every account can run (the class server's students
# run it too), /usr/bin/python3.11 where there is one
STUDENT_PY ?= $(shell command -v /usr/bin/python3.11 || echo $(PY))
SVENV := .venv-student
$(SVENV)/bin/.installed: requirements-student.txt pyproject.toml
	$(STUDENT_PY) -m venv $(SVENV)
	$(SVENV)/bin/pip install -q --upgrade pip
	$(SVENV)/bin/pip install -q torch==2.13.0    # the CPU wheel first: an unpinned torch pulls CUDA
	$(SVENV)/bin/pip install -q -r requirements-student.txt
	$(SVENV)/bin/pip install -q --no-deps -e .
	touch $@

student-env: $(SVENV)/bin/.installed

# Every notebook, answered as a student would, in the student's install from an imported bundle (a CI step)
student-test: env student-env
	MONO_REQUIRE_STUDENT_ENV=1 $(BIN)/python -m pytest -q tests/test_student_env.py

# The class server's venv: the student's install plus JupyterHub (its students' servers run from it)
CVENV := .venv-class
$(CVENV)/bin/.installed: requirements-student.txt requirements.txt pyproject.toml
	$(STUDENT_PY) -m venv $(CVENV)
	$(CVENV)/bin/pip install -q --upgrade pip
	$(CVENV)/bin/pip install -q torch==2.13.0
	$(CVENV)/bin/pip install -q -r requirements-student.txt $$(grep -E '^jupyterhub==' requirements.txt | cut -d' ' -f1)
	$(CVENV)/bin/pip install -q --no-deps -e .
	touch $@

class-env: $(CVENV)/bin/.installed

# The student's door: write the exercises (the notebooks with stubs for the solutions) into exercises/ and
# open JupyterLab there. A student's edited exercise is never replaced: then Lab opens on what is there.
# With the full install (.venv) if there is one, else the student's (.venv-student, made if missing).
EXBIN = $(if $(wildcard $(BIN)/.installed),$(BIN),$(SVENV)/bin)
exercises:
	@[ -f $(BIN)/.installed ] || $(MAKE) student-env
	$(EXBIN)/python -m mono_utils lessons --out exercises || echo "(kept the exercises above as they are)"
	$(EXBIN)/jupyter lab exercises/

# The class server (docs/class-server.md): JupyterHub's proxy from npm into classroom/node_modules, and the
# hub's test (root, Unix accounts, three students at once; a CI step of its own, see .ci/run)
hub-proxy: classroom/node_modules/.installed
classroom/node_modules/.installed: classroom/package.json classroom/package-lock.json
	cd classroom && npm ci --no-audit --no-fund
	touch $@

class-test: env class-env hub-proxy
	MONO_REQUIRE_HUB=1 MONO_CLASS_VENV=$(CURDIR)/$(CVENV) $(BIN)/python -m pytest -q -s tests/test_classroom.py

clean-runs:
	rm -rf runs/
