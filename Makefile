# `make env` sets everything up (idempotent), `make test` runs the suite, `make demo` the built-in study.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
APT_PKGS := pkg-config libopencv-dev libturbojpeg0-dev
STAMP := $(VENV)/.installed

.PHONY: env test lint demo demo-text bench clean-env

env: $(STAMP)

# Re-run only when the project's dependency list changes; a ready machine does nothing.
$(STAMP): pyproject.toml
	@if ! dpkg -s $(APT_PKGS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make env: installing $(APT_PKGS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	  else \
	    echo "make env: missing system packages ($(APT_PKGS)) and not root; see README, 'Installing without root'"; exit 1; \
	  fi; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	@touch $@

test: env
	$(PY) -m pytest -q

lint: env
	$(VENV)/bin/ruff check repr_sim tests benchmarks

demo: env
	$(VENV)/bin/reprsim demo

demo-text: env
	$(VENV)/bin/reprsim demo --text

clean-env:
	rm -rf $(VENV)
