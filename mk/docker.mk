# The Docker lab (issue 4): images, the compose world of FIG. 1, and its Docker-backend tests.
#   make base-image       registry-free base (debootstrap + docker import), cached
#   make lab-image        the node image from the working tree (rebuilt only when sources change)
#   make lab-up           bring the lab up, wait until ready, run one traversal, print its result
#   make lab-down         remove every container, network and host rule of the lab
#   make lab-shell NODE=peer-a
#   make bench-docker     time the Docker bring-up (images built)
#   make scenarios-docker the scenario suite on the Docker backend (pytest scenarios --backend docker)
#   make test-docker      the Docker lab's own tests, then scenarios-docker
BASE_IMAGE ?= dp2pt/base:bookworm
LAB_BASE   ?= $(BASE_IMAGE)
NODE_IMAGE ?= dp2pt/node:latest
NODE       ?= peer-a
export BASE_IMAGE LAB_BASE NODE_IMAGE

.PHONY: base-image lab-image lab-up lab-down lab-shell bench-docker scenarios-docker test-docker

base-image:
	@bash images/build-base.sh

lab-image: $(if $(filter $(BASE_IMAGE),$(LAB_BASE)),base-image)
	@bash images/build-node.sh

lab-up: lab-image
	@$(PYTHON) images/labctl.py up

lab-down:
	@$(PYTHON) images/labctl.py down

lab-shell:
	@$(PYTHON) images/labctl.py shell $(NODE)

bench-docker: lab-image
	@$(PYTHON) images/bench.py

scenarios-docker: lab-image
	$(PYTEST) -q scenarios --backend docker

test-docker: lab-image
	$(PYTEST) -q tests/test_docker_units.py tests/test_docker_lab.py
	$(MAKE) --no-print-directory scenarios-docker
