# Study of the improved protocol (issue 5): model and lab success probability of punch schedules.
STUDY_OUT ?= runs/study
STUDY_TRIALS ?= 10000
STUDY_LAB_RUNS ?= 200

.PHONY: study-model study test-study

## study-model: success probability vs k per schedule and rate, model only (no root); CSV + PNGs in $(STUDY_OUT)
study-model:
	$(PYTHON) -m lab.cli study improved --model-only --trials $(STUDY_TRIALS) --out $(STUDY_OUT)

## study: the same plus the lab runs (root): measured rates next to the model's intervals
study:
	$(PYTHON) -m lab.cli study improved --trials $(STUDY_TRIALS) --lab-runs $(STUDY_LAB_RUNS) --out $(STUDY_OUT)

## test-study: the model's unit tests and the lab-vs-model agreement scenarios
test-study:
	$(PYTEST) -q tests/test_model_*.py tests/test_schedules_*.py scenarios/test_study_agreement.py
