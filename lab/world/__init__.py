"""The lab itself: the networks of the spec's figures built from real kernel NAT routers.

It owns what a world is (:mod:`~lab.world.topology`, YAML in ``topologies/``), how each router
translates (:mod:`~lab.world.nat`, RFC 4787 profiles rendered to nftables), where nodes live
(:mod:`~lab.world.backends`: network namespaces or Docker containers, and
:mod:`~lab.world.compose`: the same world as a compose file for ``make lab-up``), the neighbours who
cut in (:mod:`~lab.world.traffic`), what the wire shows (:mod:`~lab.world.capture`), the outside
check that each router behaves as its label says (:mod:`~lab.world.rfc5780`), the port-block
allocator some profiles need (:mod:`~lab.world.pba`, behind NFQUEUE), addresses a node adopts
(:mod:`~lab.world.addressing`), what runs on server nodes (:mod:`~lab.world.services`,
:mod:`~lab.world.redis`), and how long and how lossy each link is: conditions
(:mod:`~lab.world.links`, pure), applied per lab (:mod:`~lab.world.linkctl`) by the kernel's netem
(:mod:`~lab.world.netem`) or the userspace emulator (:mod:`~lab.world.linkemu`), and measured from
inside the nodes (:mod:`~lab.world.measure`). Nothing here knows about scenarios or the protocol's
variants.
"""
