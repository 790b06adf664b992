import pytest

from dp2pt.errors import ConfigError, RemoteProtocolError
from dp2pt.proto.nat_test import (ADDRESS_AND_PORT_DEPENDENT, ADDRESS_DEPENDENT, ENDPOINT_INDEPENDENT,
                                  filtering_behaviour, mapping_behaviour, probe_count, punch_plan, report_from_probes)


def test_basic_reports_x2_and_dx2():
    report = report_from_probes("basic", [("198.51.100.2", 20000), ("198.51.100.2", 20002)])
    assert (report.ip, report.port, report.delta, report.predicted_port) == ("198.51.100.2", 20002, 2, 20004)


def test_simplified_sends_one_probe_and_assumes_delta_one():
    assert probe_count("simplified") == 1
    report = report_from_probes("simplified", [("198.51.100.2", 20000)])
    assert (report.port, report.delta, report.predicted_port) == (20000, 1, 20001)


def test_port_preserving_nat_gives_delta_zero():
    assert report_from_probes("improved", [("198.51.100.2", 5000), ("198.51.100.2", 5000)]).delta == 0


def test_probes_on_two_public_addresses_are_refused():
    with pytest.raises(RemoteProtocolError, match="several public addresses"):
        report_from_probes("basic", [("198.51.100.2", 1), ("198.51.100.3", 2)])


def test_unknown_variant():
    with pytest.raises(ConfigError, match="unknown variant"):
        probe_count("turbo")


X = ("203.0.113.1", 40000)
Y = ("203.0.113.1", 40001)


@pytest.mark.parametrize("x1, x2, x3, behaviour", [
    (X, Y, None, ADDRESS_AND_PORT_DEPENDENT),  # another port of the same server: another mapping
    (X, Y, X, ADDRESS_AND_PORT_DEPENDENT),
    (X, X, X, ENDPOINT_INDEPENDENT),  # another IP too, still the same mapping
    (X, X, Y, ADDRESS_DEPENDENT),  # the same for another port, not for another IP
    (X, X, None, None),  # no second address on the server: cannot tell
    (X, None, X, ENDPOINT_INDEPENDENT),  # simplified: one spec probe, then the other address
    (X, None, Y, None),  # address- or address-and-port-dependent: cannot tell
])
def test_mapping_behaviour_rfc5780(x1, x2, x3, behaviour):
    assert mapping_behaviour(x1, x2, x3) == behaviour


@pytest.mark.parametrize("ip, port, behaviour", [
    (True, True, ENDPOINT_INDEPENDENT), (True, False, ENDPOINT_INDEPENDENT),
    (False, True, ADDRESS_DEPENDENT), (False, False, ADDRESS_AND_PORT_DEPENDENT)])
def test_filtering_behaviour_rfc5780(ip, port, behaviour):
    assert filtering_behaviour(ip, port) == behaviour


def test_an_endpoint_independent_mapping_needs_no_prediction():
    predicted = [40001, 40002, 40003]
    assert punch_plan(40000, ENDPOINT_INDEPENDENT, predicted) == [40000]
    assert punch_plan(40000, ADDRESS_DEPENDENT, predicted) == predicted
    assert punch_plan(40000, None, predicted) == predicted  # nothing discovered: the spec's prediction
