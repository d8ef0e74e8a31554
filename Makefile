# Counterpart: set-up, run, test and benchmark on Debian with Python 3.11.
# Every target installs what is missing first: Debian packages when run as root (otherwise it
# prints the apt-get line to run), then a virtualenv in .venv with the Python dependencies.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# chromium is for the browser tests and `make screenshots` (Playwright drives Debian's build).
# fonts-wqy-microhei draws Chinese and Japanese names, which Liberation and DejaVu lack;
# fonts-noto-core draws Hebrew, Arabic, Devanagari, Greek and Vietnamese names (the certificate
# of completion sets each name in the first of these fonts that has its letters).
DEB_PACKAGES := libreoffice-writer-nogui python3-uno fonts-liberation fonts-wqy-microhei \
	fonts-noto-core fonts-dejavu-core poppler-utils python3-venv chromium
# What only the tests need: Redis for the shared rate-limit test, PostgreSQL for test-postgres,
# nginx to run the shipped reverse-proxy configuration (deploy/nginx/) in front of the app, and
# systemd for systemd-analyze, which checks the shipped service unit (deploy/systemd/).
TEST_DEB_PACKAGES := redis-server postgresql nginx systemd
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: help setup system-packages test-packages run dev test test-sqlite test-postgres bench bench-web \
	bench-soak \
	lint screenshots clean

help:
	@echo "make run          set up, then start the web app on http://$(HOST):$(PORT)/"
	@echo "make dev          the same with Flask's debug server (reloads on change)"
	@echo "make test         set up, then run the whole suite on SQLite and on PostgreSQL"
	@echo "make test-sqlite  the suite on the embedded SQLite database only"
	@echo "make test-postgres  the database tests on a private PostgreSQL server it starts and stops"
	@echo "make bench        set up, then print the speed benchmarks"
	@echo "make bench-web    set up, then time the staff pages at 1,000 to 100,000 letters, 1 and 50 clients"
	@echo "make bench-soak   set up, then watch the memory while LETTERS letters are made (default 5000)"
	@echo "make screenshots  save pictures of the main pages into docs/screenshots/"

system-packages:
	@scripts/install-debian-packages $(DEB_PACKAGES)

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

test-packages:
	@scripts/install-debian-packages $(TEST_DEB_PACKAGES)

test: test-sqlite test-postgres

test-sqlite: setup test-packages
	@scripts/run-pytest $(BIN)/pytest $(PYTEST_ARGS)

# On PostgreSQL: the domain (every transaction, lock and migration) and the web tests that
# drive the database through many requests or several servers. The rest (browser, PDF and
# page rendering) does not depend on the database engine and runs once, on SQLite.
POSTGRES_TESTS ?= tests/workflow tests/web/test_two_servers.py tests/web/test_execution_api.py \
	tests/web/test_api.py tests/web/test_roles.py tests/web/test_template_library.py \
	tests/web/test_sessions.py tests/web/test_tokens.py tests/web/test_signer_copy.py \
	tests/web/test_accounts_admin.py tests/web/test_webhooks_api.py tests/web/test_webhooks_admin.py \
	tests/web/test_worker.py tests/web/test_notices_pages.py tests/web/test_assembly_jobs.py \
	tests/web/test_letters_list.py tests/web/test_letters_pages.py tests/web/test_scale_proof.py

test-postgres: setup test-packages
	@scripts/with-postgres scripts/run-pytest $(BIN)/pytest $(or $(PYTEST_ARGS),$(POSTGRES_TESTS))

screenshots: setup
	$(BIN)/python tests/web/screenshots.py docs/screenshots

# The queue's benchmark measures PostgreSQL too when its packages are there (as root, with-postgres
# installs them), and the embedded SQLite queue alone otherwise.
bench: setup
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_verify.py
	@if [ "$$(id -u)" = 0 ] || scripts/install-debian-packages postgresql >/dev/null 2>&1; then \
	  scripts/with-postgres $(BIN)/python bench/bench_jobs.py; \
	else $(BIN)/python bench/bench_jobs.py; fi

# SQLite, then PostgreSQL on a private server (as root, with-postgres installs it); pick with
# BENCH_WEB_SIZES=1000,10000 BENCH_WEB_ENGINES=sqlite BENCH_WEB_CLIENTS=50 BENCH_WEB_SECONDS=6
# BENCH_WEB_SIGNING=0 (see bench/bench_web.py). Built SQLite databases are kept in output/bench/.
bench-web: setup
	@if [ "$$(id -u)" = 0 ] || scripts/install-debian-packages postgresql >/dev/null 2>&1; then \
	  scripts/with-postgres $(BIN)/python bench/bench_web.py; \
	else $(BIN)/python bench/bench_web.py --engines sqlite; fi

# The memory soak (about 0.2 s a letter on an idle machine): make bench-soak LETTERS=5000
LETTERS ?= 5000
bench-soak: setup
	$(BIN)/python bench/bench_soak.py $(LETTERS)

lint: setup
	$(BIN)/ruff check workflow web tests bench tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
