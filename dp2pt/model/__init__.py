"""An in-process model of the improved protocol's punch exchange (spec Diagram 1), for studying schedules.

Nothing here opens a socket or reads a clock: time is passed in and a dropped packet is a return
value (after Tailscale's natlab). The pieces, one job each:

- :mod:`.nat` — one NAT router: RFC 4787 mapping and filtering, and the port allocator (preserve,
  sequential with a delta shared by all LAN hosts, random), matching the lab's NAT profiles.
- :mod:`.timeline` — when each step of the exchange happens (spec steps 3-16), as explicit parameters.
- :mod:`.cutins` — when other LAN hosts open new flows ("cut in"): fixed counts per window, or Poisson.
- :mod:`.exchange` — one whole exchange, probes to punches, on two NATs; says whether a punch got through.
- :mod:`.estimate` — Monte-Carlo success probability of a schedule, with a Wilson 95% interval.
- :mod:`.design` — the cross-matching schedule design, and the choice of k from a measured cut-in rate.
"""
