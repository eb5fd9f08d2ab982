# Two commands a fresh clone needs:  `make demo` (main job) and `make test` (test suite).
# Both create .venv with pip on first use and skip the install while it is up to date.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hf_infonc-installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e ".[dev,demo]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@hf_home=$$(mktemp -d); trap 'rm -rf "$$hf_home"' EXIT; \
	$(OFFLINE) HF_HOME=$$hf_home $(VENV)/bin/hf-infonc finetune recipes/demo.yaml --overwrite

# pytest's exit code 5 ("no tests collected") is a failure, not a pass.
test: $(STAMP)
	@hf_home=$$(mktemp -d); trap 'rm -rf "$$hf_home"' EXIT; \
	$(OFFLINE) HF_HOME=$$hf_home $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the run"; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(PY) benchmarks/bench_info.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
