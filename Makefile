# guestprep: two entry points on a fresh Debian 12 machine: `make demo`, `make test`.
SHELL := /bin/sh
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz bench setup system-deps venv clean

demo: venv
	@mkdir -p reports/demo
	@$(VENV)/bin/guestprep preflight --local --out reports/demo --format json,html,junit,csv; rc=$$?; \
	case $$rc in 0|1|3) echo; echo "demo: this machine was audited as a guest (exit $$rc: 0 ready, 1 findings at/above the threshold, 3 facts that could not be read)."; \
	  echo "demo: reports in $(CURDIR)/reports/demo: report.html, report.json, junit.xml, findings.csv"; exit 0;; esac; exit $$rc

test: system-deps venv
	@VENV=$(VENV) ./scripts/run-tests.sh

# The fuzz properties of `make test`, run long (GUESTPREP_FUZZ_EXAMPLES examples each).
fuzz: venv
	@GUESTPREP_FUZZ_EXAMPLES=$${GUESTPREP_FUZZ_EXAMPLES:-5000} $(VENV)/bin/python -m pytest -p no:xdist -m fuzz -q tests/fuzz

bench: system-deps venv
	@for b in benchmarks/*.py; do case $$b in */harness.py|*/esx_chain.py) continue;; esac; \
	  echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

setup: system-deps venv

system-deps:
	@./scripts/ensure-system-packages.sh scripts/system-packages.txt

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null; then \
		if [ "$$(id -u)" -eq 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
		else echo "python3-venv is missing: run as root: apt-get install python3-venv" >&2; exit 2; fi; fi
	@./scripts/ensure-system-packages.sh scripts/build-packages.txt
	@$(PYTHON) -m venv $(VENV)
	@# pip's own chatter (index warnings, build-backend notices) goes to a log, shown only if pip fails:
	@# the first screen of `make test` is then the suite's, where a CI excerpt shows it
	@$(VENV)/bin/pip install -q --upgrade pip >$(VENV)/pip-install.log 2>&1 || { cat $(VENV)/pip-install.log >&2; exit 1; }
	@# compat: a plain path .pth instead of setuptools' import-hook finder, which cost every console-script
	@# start ~15 ms of imports (issue 17 fixed cost; setuptools "Development Mode", editable_mode)
	@echo "venv: installing guestprep and its test dependencies into $(VENV) (log: $(VENV)/pip-install.log)"
	@$(VENV)/bin/pip install -q -e '.[test,bench]' --config-settings editable_mode=compat >>$(VENV)/pip-install.log 2>&1 \
		|| { tail -n 60 $(VENV)/pip-install.log >&2; echo "venv: pip failed (whole log: $(VENV)/pip-install.log)" >&2; exit 1; }
	@touch $@

clean:
	rm -rf $(VENV) reports tests/artifacts .pytest_cache
