"""Agents: the programs that run on peers A and B of a cell, and the contract they are started with.

An *agent* is whatever runs in the two peer nodes of a scenario cell: dp2pt's own peers, full ICE
(RFC 8445) with aioice as the baseline dp2pt is compared with (:mod:`~lab.agents.ice`), or any
program a user names. Every agent is started by the scenario runner with the same environment
(:mod:`~lab.agents.contract`: its role, ids, the location server's STUN address, an optional TURN
server, and a signalling rendezvous, :mod:`~lab.agents.rendezvous`, that runs on the lab's server
node), may print one JSON result line, and is judged from the capture whatever it claims. The
modules here run *inside* nodes: they import neither the world nor the scenarios, only the
standard library, aioice and each other, so a user's own image needs no more than they do.
"""
