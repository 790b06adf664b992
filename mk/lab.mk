# Lab targets (issue 3): netns lab, scenario matrix, NAT verification, bring-up benchmark.
.PHONY: lab-unit lab-scenarios lab-matrix lab-verify-nat bench-lab lab-clean lab-status

## lab-unit: unit tests of the pure lab code (NAT rules, topology, model, cut-in planning)
lab-unit:
	$(PYTEST) -q tests/lab

## lab-scenarios: every scenario (matrix, RFC 5780 verification, teardown) on the netns backend
lab-scenarios:
	$(PYTEST) -q scenarios --backend $${DP2PT_LAB_BACKEND:-netns}

## lab-matrix: regenerate scenarios/matrix.csv from lab/scenarios/expect.py and list the cells
lab-matrix:
	$(PYTHON) -m lab.scenarios.matrix --write

## lab-verify-nat: classify every NAT profile with coturn's turnutils_natdiscovery
lab-verify-nat:
	$(PYTHON) -m lab.cli verify-nat

## bench-lab: time of `dp2pt-lab up` for fig1 (budget 1 s)
bench-lab:
	$(PYTHON) -m lab.bench.bringup --topology fig1 --rounds 10 --budget 1.0

## lab-clean: remove every lab on this machine, leftovers of crashed runs included
lab-clean:
	$(PYTHON) -m lab.cli down --all

lab-status:
	$(PYTHON) -m lab.cli status
