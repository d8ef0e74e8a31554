# Counterpart: set-up, run, test and benchmark on Debian with Python 3.11.
# Every target installs what is missing first: Debian packages when run as root (otherwise it
# prints the apt-get line to run), then a virtualenv in .venv with the Python dependencies.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := libreoffice-writer-nogui python3-uno fonts-liberation poppler-utils python3-venv

.PHONY: help setup system-packages run test bench lint clean

help:
	@echo "make run    set up, then start Counterpart on its embedded defaults"
	@echo "make test   set up, then run the whole test suite"
	@echo "make bench  set up, then print the speed benchmarks"

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

run: setup
	@$(BIN)/counterpart sample-terms separation_letter > output/reference-terms.json
	@$(BIN)/counterpart render separation_letter --terms output/reference-terms.json \
	  --docx output/separation_letter.docx --pdf output/separation_letter.pdf
	@echo "The reference letter is in output/separation_letter.docx and output/separation_letter.pdf"

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: setup
	@$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: the suite is broken"; exit 1; fi; \
	exit $$status

bench: setup
	$(BIN)/python bench/bench_pipeline.py

lint: setup
	$(BIN)/ruff check workflow web tests bench tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
