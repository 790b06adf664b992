# dp2pt — top-level targets. Feature areas add theirs in mk/*.mk (one file per area).
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest

.PHONY: setup test unit scenarios

## setup: install what a fresh Debian machine needs (apt + pip), as root
setup:
	bash scripts/setup.sh

## test: the README's test command — unit tests, then the scenario matrix
test:
	$(PYTEST) -q -rs tests scenarios

unit:
	$(PYTEST) -q tests

scenarios:
	$(PYTEST) -q scenarios

-include mk/*.mk
