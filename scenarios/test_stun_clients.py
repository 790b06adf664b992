"""Classic and modern STUN clients, from behind every lab NAT, judge dp2pt's server as they judge coturn.

For each NAT profile, ``turnutils_natdiscovery``, ``turnutils_stunclient``, Debian's ``stun`` and
pystun3 run against dp2pt's location server in RFC 5780 mode and against coturn, both on the sink's
two addresses (lab.scenarios.stun_clients).  Each client's verdict must be the same for both servers,
the mapped address must be the NAT's public address, and natdiscovery must name the profile's own
RFC 4787 behaviours.
"""

from __future__ import annotations

import shutil

import pytest

from lab.scenarios import stun_clients
from lab.world import nat

PROFILES = list(nat.PROFILE_NAMES) + ["symmetric-sequential:delta=2"]


@pytest.fixture(scope="module")
def comparisons(backend, run_dir):
    if not shutil.which("turnserver"):
        pytest.skip("coturn is not installed (apt-get install coturn)")
    return stun_clients.compare_all(backend, PROFILES, workdir=run_dir / "stun-clients")


def _get(comparisons, profile, client):
    c = comparisons[profile][client]
    if c.missing:
        pytest.skip(c.missing)
    return c


@pytest.mark.parametrize("client", stun_clients.CLIENTS)
@pytest.mark.parametrize("profile", PROFILES)
def test_the_client_judges_dp2pt_as_it_judges_coturn(comparisons, profile, client):
    c = _get(comparisons, profile, client)
    assert c.verdicts["dp2pt"] == c.verdicts["coturn"], (
        f"{client} behind {profile}: dp2pt {c.verdicts['dp2pt']} vs coturn {c.verdicts['coturn']}\n"
        f"--- dp2pt ---\n{c.outputs['dp2pt'][-1200:]}\n--- coturn ---\n{c.outputs['coturn'][-1200:]}")


@pytest.mark.parametrize("profile", PROFILES)
def test_natdiscovery_on_dp2pt_names_the_profile(comparisons, profile):
    c = _get(comparisons, profile, "turnutils_natdiscovery")
    prof = nat.parse_profile(profile)
    assert c.verdicts["dp2pt"] == (prof.mapping.value, prof.filtering.value), c.outputs["dp2pt"][-1500:]


#: Where each client's verdict holds the mapped IPs it saw.
MAPPED = {"turnutils_stunclient": 0, "stun": 1}


@pytest.mark.parametrize("client", list(MAPPED))
@pytest.mark.parametrize("profile", PROFILES)
def test_the_client_sees_the_nat_public_address(comparisons, profile, client):
    c = _get(comparisons, profile, client)
    assert c.verdicts["dp2pt"][MAPPED[client]] == [c.wan_ip], c.outputs["dp2pt"][-800:]
