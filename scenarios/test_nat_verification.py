"""Every NAT profile is what its label says, according to an outside tool (coturn, RFC 5780).

coturn's turnutils_natdiscovery runs its mapping, filtering and hairpinning tests behind each
profile against a STUN-only turnserver with two public addresses; its verdicts must equal the
profile's RFC 4787 mapping and filtering behaviours and whether it hairpins. Profiles with a short
mapping timeout also pass the mapping lifetime test (alive before the timeout, gone after it).
Port blocks and collisions, which an RFC 5780 client cannot see, are read from conntrack by
scenarios/test_port_blocks.py and scenarios/test_port_collision.py.
"""

from __future__ import annotations

import shutil

import pytest

from lab.world import nat, rfc5780

PROFILES = list(nat.PROFILE_NAMES) + [
    "symmetric-sequential:delta=2",
    "full-cone:hairpin=1",
    "port-restricted-cone:hairpin=1,timeout=4",  # hairpinning with APDF filtering, and the lifetime test
    "symmetric-random:hairpin=1",
    "address-dependent:hairpin=1",
    "cgnat:order=random,hairpin=1",
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
    assert v.lifetime in (None, (True, False)), f"mapping lifetime (alive before, gone after): {v.lifetime}"


def test_every_profile_and_parameter_is_verified():
    profiles = [nat.parse_profile(p) for p in PROFILES]
    assert {p.name for p in profiles} == set(nat.PROFILE_NAMES)
    assert any(p.hairpin for p in profiles) and any(p.block for p in profiles)
    assert any(p.udp_timeout <= rfc5780.LIFETIME_MAX for p in profiles)
