import pytest

from dp2pt.errors import ConfigError, RemoteProtocolError
from dp2pt.proto.nat_test import probe_count, report_from_probes


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
