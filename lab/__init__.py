"""dp2pt lab: an orchestrator that builds the spec's FIG. 1/4 networks with real NAT routers.

The package is grouped by concern (docs/ARCHITECTURE.md):

* :mod:`lab.world` — the lab itself: topologies, NAT profiles, backends (netns, Docker), the compose
  world, cut-in traffic, captures, RFC 5780 verification of the routers;
* :mod:`lab.agents` — what runs on peers A and B besides dp2pt (ICE with aioice), the environment
  contract any program is started with, and the signalling rendezvous;
* :mod:`lab.scenarios` — one scenario cell run and classified, expected outcomes, the matrix;
* :mod:`lab.study` — the improved protocol's success probability, modelled and measured;
* :mod:`lab.report` — ladder diagrams, heatmaps and summaries of a run;
* :mod:`lab.bench` — ``make bench``: dp2pt measured next to its references.

The lab drives the protocol only through the ``dp2pt`` command line (docs/CONTRACT.md); it reads
the wire formats through dp2pt's codecs and reuses its in-process model, never its server or peer.

Module paths of the flat layout before the regroup (``lab.run``, ``lab.nat``, ``python -m
lab.matrix``, ...) are contracts users import and run: :data:`MOVED` keeps each one an alias of its
new module (the same module object, not a copy).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

#: Old module path -> new module path.
MOVED = {
    "lab.topology": "lab.world.topology",
    "lab.nat": "lab.world.nat",
    "lab.backends": "lab.world.backends",
    "lab.backends.base": "lab.world.backends.base",
    "lab.backends.netns": "lab.world.backends.netns",
    "lab.backends.docker": "lab.world.backends.docker",
    "lab.traffic": "lab.world.traffic",
    "lab.capture": "lab.world.capture",
    "lab.rfc5780": "lab.world.rfc5780",
    "lab.run": "lab.scenarios.run",
    "lab.expect": "lab.scenarios.expect",
    "lab.matrix": "lab.scenarios.matrix",
    "lab.report_draw": "lab.report.draw",
    "lab.report_ladder": "lab.report.ladder",
    "lab.bench_lab": "lab.bench.labruns",
    "lab.bench_mem": "lab.bench.memory",
    "lab.bench_path": "lab.bench.relay",
    "lab.bench_stun": "lab.bench.stun",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Resolves an old path to the new module object; ``python -m OLD`` runs the new module's code."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        real = importlib.util.find_spec(MOVED[fullname])
        # The real file as origin: ``python -m OLD`` then runs with the new module's __file__.
        return importlib.util.spec_from_file_location(
            fullname, real.origin, loader=self, submodule_search_locations=real.submodule_search_locations
        )

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module):
        """Already executed under its new name; the import system set the alias spec on it: undo."""
        module.__spec__ = self._specs[module.__name__]

    def get_code(self, fullname):
        spec = importlib.util.find_spec(MOVED[fullname])
        return spec.loader.get_code(spec.name)

    def get_source(self, fullname):
        spec = importlib.util.find_spec(MOVED[fullname])
        return spec.loader.get_source(spec.name)


if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Alias())
