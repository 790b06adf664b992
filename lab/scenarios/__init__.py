"""Scenarios: one matrix cell run on a lab and classified, and the outcome each cell must have.

:mod:`~lab.scenarios.run` runs a cell (NAT reload, capture, cut-ins, the two peers through the
``dp2pt`` CLI, artifacts) and judges it from the capture; :mod:`~lab.scenarios.expect` derives the
expected outcome from how the NATs work, independently of the protocol's code;
:mod:`~lab.scenarios.matrix` is the declared grid (``scenarios/matrix.csv`` at the repository root,
which the pytest scenarios assert against); :mod:`~lab.scenarios.agents` says how a cell runs each
kind of agent (dp2pt, ICE, a user's command), :mod:`~lab.scenarios.failover` adds and kills
location servers of a shared directory under a run, :mod:`~lab.scenarios.stun_clients` runs the
classic and modern STUN clients behind each NAT against dp2pt's server and coturn.
"""
