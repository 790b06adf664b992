"""dp2pt lab: an orchestrator that builds the spec's FIG. 1/4 networks with real NAT routers.

The lab drives the protocol only through the ``dp2pt`` command line (docs/CONTRACT.md), so it
never imports protocol internals. Backends (``lab.backends``) decide *where* nodes live (Linux
network namespaces, Docker containers); everything above them is backend-agnostic.
"""
