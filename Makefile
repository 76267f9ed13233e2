# make book : set up, train the default suite if needed, extract losses if needed, execute and build the book
# make test : set up, then every test (including the browser check of a book built on the nano suite)
#
# BOOK_SUITE picks the suite (default pico; nano for a quick look; pythia-small on a GPU with the hub).
# BOOK_DATA picks the data root (default ./data).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export BOOK_SUITE ?= pico
# A CPU build of torch unless a CUDA driver is present: the local wheel or find-links copy if pip already knows one
# (no network needed), else PyTorch's CPU index. PyPI itself has no +cpu builds, so the first try fails fast there.
TORCH_CPU := torch==2.13.0+cpu
TORCH_CPU_INDEX := --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple

.PHONY: setup book data test chromium clean-book

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q "torch>=2.4,<2.14"; \
	  else $(PIP) install -q "$(TORCH_CPU)" 2>/dev/null || $(PIP) install -q "$(TORCH_CPU)" $(TORCH_CPU_INDEX); fi; \
	fi
	$(PIP) install -q -e ".[book,test]"
	touch $@

setup: $(VENV)/.installed

data: setup
	$(PY) -m helpers.train --suite $(BOOK_SUITE)
	$(PY) -m helpers.extract --suite $(BOOK_SUITE)

book: data
	$(PY) -m helpers.notebooks --check
	BOOK_BUILD=1 $(VENV)/bin/jupyter-book build . -W -n --keep-going

chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the browser check of the book will be skipped"

test: setup chromium
	$(PY) -m pytest

clean-book:
	rm -rf _build
