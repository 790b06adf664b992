"""The server's STUN answers, sans-IO: every client answered the way it reads, RFC 5780, 420s, sizes."""

import pytest

from dp2pt.errors import ConfigError, RemoteProtocolError
from dp2pt.proto import stun
from dp2pt.proto.stun_server import StunAddresses, answer
from tests.stun_golden import GOLDEN

SOURCE = ("198.51.100.1", 40001)
ONE = StunAddresses("203.0.113.50", 3478, 3479)
TWO = StunAddresses("203.0.113.50", 3478, 3479, alt_ip="203.0.113.51")
PRIMARY = ("203.0.113.50", 3478)


def reply(name, addrs=ONE, local=PRIMARY):
    r = answer(GOLDEN[name], SOURCE, local, addrs)
    assert r is not None
    return r, stun.parse(r.data)


def test_rfc5389_request_gets_xor_mapped_address_only():
    r, m = reply("plain")
    assert stun.is_binding_response(m) and m.transaction_id == stun.parse(GOLDEN["plain"]).transaction_id
    assert list(m.attributes) == ["XOR-MAPPED-ADDRESS"] and stun.mapped_address(m) == SOURCE
    assert r.via == PRIMARY and len(r.data) == 32 and r.counters == ("stun_binding",)


def test_rfc3489_request_gets_mapped_address_and_its_own_transaction_id():
    r, m = reply("classic")
    assert m.classic and r.data[4:20] == GOLDEN["classic"][4:20]
    assert list(m.attributes) == ["MAPPED-ADDRESS"] and m.attributes["MAPPED-ADDRESS"] == SOURCE
    assert r.counters == ("stun_binding", "stun_classic")


def test_rfc5780_mode_says_where_the_answer_came_from_and_the_other_address():
    _, m = reply("plain", TWO)
    assert m.attributes == {"XOR-MAPPED-ADDRESS": SOURCE, "RESPONSE-ORIGIN": PRIMARY,
                            "OTHER-ADDRESS": ("203.0.113.51", 3479)}
    _, m = reply("classic", TWO, local=("203.0.113.51", 3479))  # RFC 3489 names
    assert m.attributes == {"MAPPED-ADDRESS": SOURCE, "SOURCE-ADDRESS": ("203.0.113.51", 3479),
                            "CHANGED-ADDRESS": ("203.0.113.51", 3478)}


@pytest.mark.parametrize("local, other", [
    (PRIMARY, ("203.0.113.51", 3479)),
    (("203.0.113.50", 3479), ("203.0.113.51", 3478)),
    (("203.0.113.51", 3478), ("203.0.113.51", 3479)),  # natdiscovery's test II: test III goes here
    (("203.0.113.51", 3479), ("203.0.113.51", 3478)),
])
def test_other_address_is_the_alternate_ip_and_the_other_port_as_coturn_names_it(local, other):
    r, m = reply("plain", TWO, local=local)
    assert m.attributes["OTHER-ADDRESS"] == other and m.attributes["RESPONSE-ORIGIN"] == r.via == local
    _, m = reply("change ip+port", TWO, local=local)  # the answer itself still changes IP (RFC 5780 §7.2)
    assert m.attributes["RESPONSE-ORIGIN"][0] != local[0] and m.attributes["OTHER-ADDRESS"] == other


@pytest.mark.parametrize("name, via", [
    ("change ip+port", ("203.0.113.51", 3479)),
    ("change port", ("203.0.113.50", 3479)),
    ("classic change ip+port", ("203.0.113.51", 3479)),
    ("classic change port", ("203.0.113.50", 3479)),
    ("classic change 0", PRIMARY),
])
def test_change_request_is_honoured_in_rfc5780_mode(name, via):
    r, m = reply(name, TWO)
    assert r.via == via
    origin = m.attributes.get("RESPONSE-ORIGIN") or m.attributes.get("SOURCE-ADDRESS")
    assert origin == via
    assert ("stun_changed" in r.counters) == (via != PRIMARY)


@pytest.mark.parametrize("name", ["change ip+port", "change port", "classic change ip+port"])
def test_change_request_without_a_second_address_is_420(name):
    r, m = reply(name, ONE)
    assert m.cls == stun.Class.ERROR and m.attributes["ERROR-CODE"][0] == 420
    assert 0x0003 in m.attributes["UNKNOWN-ATTRIBUTES"] and r.via == PRIMARY and r.counters == ("stun_420",)


def test_an_empty_change_request_is_answered_even_without_a_second_address():
    _, m = reply("classic change 0", ONE)  # Debian's stun client always sends one
    assert m.attributes == {"MAPPED-ADDRESS": SOURCE}


@pytest.mark.parametrize("name, listed", [
    ("unknown required", [0x0030, 0x7FFF]),
    ("classic unknown", [0x0030, 0x0030]),  # RFC 3489 §11.2.9: an odd list repeats one
    ("response-address", [0x0002, 0x0002]),
])
def test_unknown_or_refused_comprehension_required_attributes_get_420(name, listed):
    _, m = reply(name, TWO)
    assert m.attributes["ERROR-CODE"] == (420, "Unknown Attribute")
    assert m.attributes["UNKNOWN-ATTRIBUTES"] == listed


def test_comprehension_optional_unknowns_and_ice_attributes_are_ignored():
    _, m = reply("unknown optional")
    assert stun.mapped_address(m) == SOURCE
    r, m = reply("rfc5769")  # USERNAME, MESSAGE-INTEGRITY, PRIORITY, ICE-CONTROLLED, SOFTWARE, FINGERPRINT
    assert stun.mapped_address(m) == SOURCE and "FINGERPRINT" in m.attributes


def test_response_port_sends_the_answer_to_another_port_of_the_source_ip():
    r, m = reply("response-port", TWO)
    assert r.to == (SOURCE[0], 5000) and stun.mapped_address(m) == SOURCE
    zero = GOLDEN["response-port"][:24] + bytes(4)
    with pytest.raises(RemoteProtocolError, match="RESPONSE-PORT"):
        answer(zero, SOURCE, PRIMARY, TWO)


def test_padding_is_answered_with_as_much_padding():
    r, m = reply("padding", TWO)
    assert m.attributes["PADDING"] == bytes(64) and len(r.data) - len(GOLDEN["padding"]) == 36


def test_fingerprint_is_answered_with_fingerprint_and_checked():
    _, m = reply("fingerprint")
    assert "FINGERPRINT" in m.attributes  # parse() checked it
    assert "FINGERPRINT" not in reply("plain")[1].attributes
    bad = GOLDEN["fingerprint"][:-1] + b"\x00"
    with pytest.raises(RemoteProtocolError, match="FINGERPRINT"):
        answer(bad, SOURCE, PRIMARY, ONE)


@pytest.mark.parametrize("name", ["allocate", "indication"])
def test_what_is_not_a_binding_request_gets_no_answer(name):
    assert answer(GOLDEN[name], SOURCE, PRIMARY, TWO) is None


@pytest.mark.parametrize("addrs", [ONE, TWO])
def test_answers_are_small(addrs):
    """README, "Answer sizes": at most 36 bytes more than the request; and 64 bytes but for PADDING."""
    for name, data in GOLDEN.items():
        r = answer(data, SOURCE, PRIMARY, addrs)
        if r is not None:
            assert len(r.data) - len(data) <= (36 if addrs.rfc5780 else 12 + 16), name
            assert len(r.data) <= 64 or "PADDING" in stun.parse(data).attributes, name


def test_addresses_refuse_what_cannot_work():
    with pytest.raises(ConfigError, match="wildcard"):
        StunAddresses("0.0.0.0", 3478, 3479, alt_ip="203.0.113.51")
    with pytest.raises(ConfigError, match="differ"):
        StunAddresses("203.0.113.50", 3478, 3478)
    with pytest.raises(ConfigError, match="differ"):
        StunAddresses("203.0.113.50", 3478, 3479, alt_ip="203.0.113.50")
    assert TWO.sockets() == [PRIMARY, ("203.0.113.50", 3479), ("203.0.113.51", 3478), ("203.0.113.51", 3479)]
