# dp2pt — top-level targets. Feature areas add theirs in mk/*.mk (one file per area).
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest

.PHONY: setup test unit scenarios

## setup: install what a fresh Debian machine needs (apt + pip), as root
setup:
	bash scripts/setup.sh

## test: the README's test command — unit tests, the scenario matrix, the pytest plugin's example.
## -p loads the plugin also where the installed package predates its entry point (same name: never twice).
test:
	$(PYTEST) -q -rs -p lab.pytest_plugin tests scenarios docs/examples

unit:
	$(PYTEST) -q tests

scenarios:
	$(PYTEST) -q scenarios

-include mk/*.mk
