"""The bench's loopback parts: the load generator counts real answers, refuses non-loopback targets,
and the memory probe reads a real RSS.  Small bounded runs (well under a second each)."""

import os

import pytest

from lab import bench, bench_mem, bench_stun


def test_generator_counts_answers_of_a_real_server():
    with bench_stun.dp2pt_server(core="0") as (_proc, addr):
        r = bench_stun.generate(addr, duration=0.3, sockets=2, window=4)
    assert r["answered"] > 0
    assert r["answered"] <= r["sent"]


def test_generator_counts_nothing_from_a_silent_port():
    port = bench_stun.free_udp_port(1)
    r = bench_stun.generate(("127.0.0.1", port), duration=0.3, sockets=1, window=2)
    assert r["answered"] == 0


def test_generator_refuses_non_loopback():
    with pytest.raises(SystemExit, match="loopback"):
        bench_stun.generate(("192.0.2.1", 3478), duration=0.1)


def test_rss_of_this_process():
    assert bench_mem.rss_kib(os.getpid()) > 1000


def test_memory_with_a_few_peers():
    r = bench_mem.bench(peers=50, concurrency=10)
    assert r["logged_in"] == 50 and r["failed"] == 0
    assert r["rss_kib"] >= r["rss_idle_kib"] > 0


def test_markdown_names_the_machine_and_the_ratio():
    results = {"date": "d", "machine": bench.machine(), "skipped": {"lab": "no root"},
               "stun": {"duration_s": 3, "sockets": 8, "window": 16, "ratio": 0.25,
                        "dp2pt": {"rate": 100.0, "server_cpu_per_s": 1.0},
                        "coturn": {"rate": 400.0, "server_cpu_per_s": 0.8, "gen_cpu_s": 2.0}}}
    md = bench.markdown(results)
    assert "cores" in md and "0.25" in md and "| lab | skipped |" in md


def test_bad_part_is_a_user_error(capsys):
    assert bench.main(["--parts", "nope", "--out", "/tmp/x.json"]) == 2
    assert "unknown part" in capsys.readouterr().err
