# Counterpart: set-up, run, test and benchmark on Debian with Python 3.11.
# Every target installs what is missing first: Debian packages when run as root (otherwise it
# prints the apt-get line to run), then a virtualenv in .venv with the Python dependencies.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# chromium is for the browser tests and `make screenshots` (Playwright drives Debian's build).
DEB_PACKAGES := libreoffice-writer-nogui python3-uno fonts-liberation poppler-utils python3-venv \
	chromium
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: help setup system-packages run dev test bench lint screenshots clean

help:
	@echo "make run          set up, then start the web app on http://$(HOST):$(PORT)/"
	@echo "make dev          the same with Flask's debug server (reloads on change)"
	@echo "make test         set up, then run the whole test suite"
	@echo "make bench        set up, then print the speed benchmarks"
	@echo "make screenshots  save pictures of the main pages into docs/screenshots/"

system-packages:
	@missing=""; \
	for pkg in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing >/dev/null || exit 1; \
	  else \
	    echo "Counterpart needs Debian packages that are missing. Run:"; \
	    echo "  sudo apt-get install -y --no-install-recommends$$missing"; \
	    exit 1; \
	  fi; \
	fi

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed (python3.11 or python3 on PATH)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "$(PYTHON) is not Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: system-packages $(BIN)/.installed

# The first command to touch a new data folder creates and migrates its database; on the first
# run, with no account yet, an administrator is created and its password printed once.
run: setup
	@$(BIN)/counterpart migrate >/dev/null
	@$(BIN)/counterpart create-first-admin
	@$(BIN)/counterpart serve --host $(HOST) --port $(PORT)

dev: setup
	@$(BIN)/counterpart migrate >/dev/null
	@$(BIN)/counterpart create-first-admin
	@$(BIN)/flask --app web run --debug --host $(HOST) --port $(PORT)

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: setup
	@$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: the suite is broken"; exit 1; fi; \
	exit $$status

screenshots: setup
	$(BIN)/python tests/web/screenshots.py docs/screenshots

bench: setup
	$(BIN)/python bench/bench_pipeline.py

lint: setup
	$(BIN)/ruff check workflow web tests bench tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
