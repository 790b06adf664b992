# The Docker lab (issue 4): images, the compose world of FIG. 1, and its Docker-backend tests.
#   make base-image       registry-free base (debootstrap + docker import), cached
#   make lab-image        the node image from the working tree (rebuilt only when sources change)
#   make lab-up           compose.yaml up (fig1), wait until ready, run one traversal, prove its path
#   make lab-down         remove every container, network and host rule of the lab
#   make lab-shell NODE=a (the topology's node names; peer-a, peer-b, location-server still work)
#   make compose-file     regenerate compose.yaml from lab/world/topologies/fig1.yaml
#   make bench-docker     time the Docker bring-up (images built)
#   make scenarios-docker the scenario suite on the Docker backend (pytest scenarios --backend docker)
#   make test-docker      the Docker lab's own tests, then scenarios-docker
BASE_IMAGE ?= dp2pt/base:bookworm
LAB_BASE   ?= $(BASE_IMAGE)
NODE_IMAGE ?= dp2pt/node:latest
NODE       ?= a
export BASE_IMAGE LAB_BASE NODE_IMAGE

.PHONY: base-image lab-image lab-up lab-down lab-shell compose-file bench-docker scenarios-docker test-docker

base-image:
	@bash images/build-base.sh

lab-image: $(if $(filter $(BASE_IMAGE),$(LAB_BASE)),base-image)
	@bash images/build-node.sh

lab-up: lab-image
	@$(PYTHON) -m lab.cli compose up

lab-down:
	@$(PYTHON) -m lab.cli compose down

lab-shell:
	@$(PYTHON) -m lab.cli compose shell $(NODE)

compose-file:
	$(PYTHON) -m lab.cli compose fig1 > compose.yaml

bench-docker: lab-image
	@$(PYTHON) -m lab.bench.bringup --backend docker --rounds 3 --budget 5.0 --compose

scenarios-docker: lab-image
	$(PYTEST) -q -rs scenarios --backend docker

test-docker: lab-image
	$(PYTEST) -q tests/test_docker_units.py tests/test_docker_lab.py
	$(MAKE) --no-print-directory scenarios-docker
