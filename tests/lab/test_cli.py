"""Unit tests of dp2pt-lab's argument handling and error reporting (no lab needed)."""

import argparse
import sys
import types


from lab import cli


def test_unknown_profile_is_one_line_and_exit_2(capsys):
    rc = cli.main(["up", "--nat-a", "cone"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("dp2pt-lab: error: unknown NAT profile 'cone'")


def test_unknown_topology(capsys):
    assert cli.main(["up", "fig99"]) == 2
    assert "unknown topology" in capsys.readouterr().err


def test_unknown_backend(capsys):
    assert cli.main(["--backend", "vmware", "status"]) == 2
    assert "unknown backend" in capsys.readouterr().err


def test_run_needs_a_scenario(capsys):
    assert cli.main(["run", "no-such-cell"]) == 2
    assert "unknown scenario" in capsys.readouterr().err


def test_profiles_lists_every_profile(capsys):
    assert cli.main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name in ("full-cone", "restricted-cone", "port-restricted-cone", "symmetric-sequential", "symmetric-random"):
        assert name in out


def test_plugins_register_subcommands(monkeypatch):
    mod = types.ModuleType("lab_fake_plugin")

    def register(sub):
        p = sub.add_parser("fake")
        p.set_defaults(func=lambda args: 42)

    mod.register = register
    monkeypatch.setitem(sys.modules, "lab_fake_plugin", mod)
    monkeypatch.setattr(cli, "PLUGINS", ("lab_fake_plugin", "lab.no_such_plugin"))
    assert cli.main(["fake"]) == 42


def test_missing_plugin_is_skipped_silently(monkeypatch, capsys):
    monkeypatch.setattr(cli, "PLUGINS", ("lab.no_such_plugin",))
    parser = cli.build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    assert capsys.readouterr().err == ""


def test_not_root_is_reported_without_traceback(monkeypatch, capsys):
    from lab.world.backends import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert cli.main(["--backend", "netns", "up"]) == 3
    err = capsys.readouterr().err
    assert "needs root" in err and "Traceback" not in err


def test_run_refuses_cut_ins_on_ice_in_one_line(capsys):
    rc = cli.main(["run", "--agent", "ice", "--nat-a", "full-cone", "--nat-b", "full-cone", "--cut-a", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "cut-ins are timed on dp2pt's probes" in err


def test_run_refuses_an_unknown_variant_of_an_agent(capsys):
    assert cli.main(["run", "--agent", "ice", "--variant", "improved", "--nat-a", "full-cone", "--nat-b", "full-cone"]) == 2
    assert "unknown variant 'improved' for agent ice; known: stun, turn" in capsys.readouterr().err


def test_run_command_needs_a_command(capsys):
    assert cli.main(["run", "--agent", "command", "--nat-a", "full-cone", "--nat-b", "full-cone"]) == 2
    assert "a command cell needs a command" in capsys.readouterr().err
