"""The lab itself: the networks of the spec's figures built from real kernel NAT routers.

It owns what a world is (:mod:`~lab.world.topology`, YAML in ``topologies/``), how each router
translates (:mod:`~lab.world.nat`, RFC 4787 profiles rendered to nftables), where nodes live
(:mod:`~lab.world.backends`: network namespaces or Docker containers, and
:mod:`~lab.world.compose`: the same world as a compose file for ``make lab-up``), the neighbours who
cut in (:mod:`~lab.world.traffic`), what the wire shows (:mod:`~lab.world.capture`) and the outside
check that each router behaves as its label says (:mod:`~lab.world.rfc5780`). Nothing here knows
about scenarios or the protocol's variants.
"""
