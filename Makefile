# Every target installs what it needs into a local virtual environment first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,postgres,langgraph]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: install
	rm -rf data/demo
	KODE_STORE_TYPE=sqlite KODE_SQLITE_PATH=data/demo/agents.db KODE_STORE_PATH=data/demo/store \
		$(VENV)/bin/kodestore demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check kodestore tests bench
	$(VENV)/bin/ruff format --check kodestore tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
