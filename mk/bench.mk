# Benchmarks and reports (issue 6).
#   make bench                 STUN/s vs coturn, memory with 10,000 peers, the server under abuse (reply/request
#                              bytes per request kind, RSS under a non-reading client), lab timings, ICE and dp2pt
#                              side by side over the NAT matrix; JSON + Markdown
#   make bench BENCH_PARTS=stun,memory,abuse,directory   only the loopback parts (no root, no lab)
#   make bench BENCH_PARTS=directory   logins/s, connects/s, memory per peer: 1, 2, 4 servers sharing one Redis
#   make bench BENCH_PARTS=agents      only ICE vs dp2pt over the NAT matrix (root; ~6 min; BENCH_AGENT_RUNS=3 per cell)
#   make report RUN_DIR=runs/<id>        ladder diagrams, heatmap and summary of a scenario run
BENCH_OUT ?= bench/results.json
BENCH_PARTS ?= stun,memory,abuse,directory,links,lab,agents
BENCH_RUNS ?= 100
BENCH_AGENT_RUNS ?= 3
RUN_DIR ?=

.PHONY: bench report test-report

## bench: benchmarks (installs coturn first if missing, as root); prints the README's table
bench:
	@command -v turnserver >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y coturn >/dev/null; } || echo "bench: coturn not installed; its column will be n/a" >&2
	$(PYTHON) -m lab.bench --out $(BENCH_OUT) --parts $(BENCH_PARTS) --runs $(BENCH_RUNS) --agent-runs $(BENCH_AGENT_RUNS)

## report: ladder/heatmap/summary of RUN_DIR (a run of the scenario runner)
report:
	@test -n "$(RUN_DIR)" || { echo "report: error: set RUN_DIR=runs/<id>" >&2; exit 2; }
	$(PYTHON) -m lab.report $(RUN_DIR)

test-report:
	$(PYTEST) -q tests/test_report*.py tests/test_bench*.py scenarios/test_report*.py
