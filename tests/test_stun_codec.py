from aioice import stun as aioice_stun

import pytest

from dp2pt.errors import RemoteProtocolError
from dp2pt.proto import stun


def test_binding_response_carries_the_source_as_xor_mapped_address():
    request = stun.binding_request()
    data = bytes(request)
    assert stun.is_stun(data)
    response = stun.parse(stun.binding_response(stun.parse(data), ("203.0.113.7", 40001)))
    assert stun.is_binding_response(response)
    assert response.transaction_id == request.transaction_id
    assert stun.mapped_address(response) == ("203.0.113.7", 40001)


def test_mapped_address_falls_back_to_mapped_address_attribute():
    response = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE)
    response.attributes["MAPPED-ADDRESS"] = ("198.51.100.9", 1234)
    assert stun.mapped_address(stun.parse(bytes(response))) == ("198.51.100.9", 1234)


def test_truncated_stun_is_a_remote_error():
    data = bytes(stun.binding_request())
    with pytest.raises(RemoteProtocolError):
        stun.parse(data[:-1] + b"\x00\x00\x00\x08")


def test_json_is_not_mistaken_for_stun():
    assert not stun.is_stun(b'{"type":"login","id":"A"}')
    assert not stun.is_stun(b"D2PT")
