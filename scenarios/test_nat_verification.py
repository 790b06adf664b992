"""Every NAT profile is what its label says, according to an outside tool (coturn, RFC 5780).

coturn's turnutils_natdiscovery runs its mapping, filtering and hairpinning tests behind each
profile against a STUN-only turnserver with two public addresses; its verdicts must equal the
profile's RFC 4787 mapping and filtering behaviours and whether it hairpins. Every profile is
verified as it is, with hairpin=1, and with a short mapping timeout, which must pass the mapping
lifetime test (alive before the timeout, gone after it).
Port blocks and collisions, which an RFC 5780 client cannot see, are read from conntrack by
scenarios/test_port_blocks.py and scenarios/test_port_collision.py.
"""

from __future__ import annotations

import shutil

import pytest

from lab.errors import ConfigError
from lab.world import nat, rfc5780

# Every profile once as it is, once with hairpin=1, and once with a short timeout (the lifetime test).
PROFILES = list(nat.PROFILE_NAMES) + [
    "symmetric-sequential:delta=2",
    "full-cone:hairpin=1,timeout=4",
    "restricted-cone:hairpin=1,timeout=4",
    "port-restricted-cone:hairpin=1,timeout=4",  # hairpinning with APDF filtering
    "symmetric-sequential:hairpin=1,timeout=4",
    "symmetric-random:hairpin=1,timeout=4",
    "address-dependent:hairpin=1",
    "address-dependent:timeout=4",
    "cgnat:hairpin=1",  # sequential order inside the block
    "cgnat:order=random,hairpin=1",
    # The port-block allocator frees a mapping once conntrack has dropped its flow (lab.world.pba
    # reads it every second), so the profile's timeout is the mapping's lifetime there too.
    "cgnat:timeout=4",
    "symmetric-sequential:block=64",
]


@pytest.fixture(scope="module")
def verdicts(backend, run_dir):
    if not (shutil.which("turnserver") and shutil.which("turnutils_natdiscovery")):
        pytest.skip("coturn is not installed (apt-get install coturn)")
    return rfc5780.verify_all(backend, PROFILES, workdir=run_dir / "rfc5780")


@pytest.mark.parametrize("profile", PROFILES)
def test_natdiscovery_agrees_with_the_label(verdicts, profile):
    v = verdicts[profile]
    assert v.mapping == v.expected_mapping, f"mapping: natdiscovery says {v.mapping}\n{v.output[-1500:]}"
    assert v.filtering == v.expected_filtering, f"filtering: natdiscovery says {v.filtering}\n{v.output[-1500:]}"
    assert v.hairpin == v.expected_hairpin, f"hairpinning: natdiscovery says {v.hairpin}\n{v.output[-1500:]}"
    short = nat.parse_profile(profile).udp_timeout <= rfc5780.LIFETIME_MAX
    assert v.lifetime == ((True, False) if short else None), \
        f"mapping lifetime (alive before the timeout, gone after it): {v.lifetime}\n{v.output[-1500:]}"


def _buildable(spec: str) -> bool:
    try:
        nat.parse_profile(spec)
    except ConfigError:
        return False
    return True


def test_every_profile_and_parameter_is_verified():
    profiles = [nat.parse_profile(p) for p in PROFILES]
    names = set(nat.PROFILE_NAMES)
    assert {p.name for p in profiles} == names
    assert {p.name for p in profiles if p.hairpin} == names, "a profile never verified with hairpin=1"
    can_be_short = {n for n in names if _buildable(f"{n}:timeout={rfc5780.LIFETIME_MAX}")}
    assert {p.name for p in profiles if p.udp_timeout <= rfc5780.LIFETIME_MAX} == can_be_short, \
        "a profile never given the mapping lifetime test"
    assert any(p.delta != 1 for p in profiles) and any(p.block for p in profiles)
    assert {p.allocation for p in profiles if p.block} == {nat.Allocation.SEQUENTIAL, nat.Allocation.RANDOM}
