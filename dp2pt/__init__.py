"""dp2pt: the direct peer-to-peer transmission protocol between two virtual networks.

The protocol lives in :mod:`dp2pt.proto` (sans-IO: codecs, schedules, state machines);
:mod:`dp2pt.aio` moves its bytes over real asyncio sockets; :mod:`dp2pt.cli` is the command line.
"""

__version__ = "0.1.0"
