# Two commands a new user needs: `make run` (the default sweep) and `make test` (the suite).
# Both create or refresh the virtual environment first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv run test test-fast bench clean

venv: $(STAMP)

# CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,peers,lora,distributed]"
	touch $(STAMP)

run: venv
	$(VENV)/bin/slsweep run

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-fast: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

bench: venv
	$(PY) benchmarks/loss_bench.py --tokens 2048 --vocab 151936

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
