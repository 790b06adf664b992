"""Every NAT profile is what its label says, according to an outside tool (coturn, RFC 5780).

coturn's turnutils_natdiscovery runs its mapping and filtering tests behind each profile against a
STUN-only turnserver with two public addresses; its verdicts must equal the profile's RFC 4787
mapping and filtering behaviours.
"""

from __future__ import annotations

import shutil

import pytest

from lab.world import nat, rfc5780

PROFILES = list(nat.PROFILE_NAMES) + ["symmetric-sequential:delta=2"]


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
