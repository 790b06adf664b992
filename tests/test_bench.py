"""The bench's loopback parts: the load generator counts real answers, refuses non-loopback targets,
and the memory probe reads a real RSS.  Small bounded runs (well under a second each)."""

import os

import pytest

from lab import bench
from lab.bench import abuse, memory, stun


def test_generator_counts_answers_of_a_real_server():
    with stun.dp2pt_server(core="0") as (_proc, addr):
        r = stun.generate(addr, duration=0.3, sockets=2, window=4)
    assert r["answered"] > 0
    assert r["answered"] <= r["sent"]


def test_generator_counts_nothing_from_a_silent_port():
    port = stun.free_udp_port(1)
    r = stun.generate(("127.0.0.1", port), duration=0.3, sockets=1, window=2)
    assert r["answered"] == 0


def test_generator_refuses_non_loopback():
    with pytest.raises(SystemExit, match="loopback"):
        stun.generate(("192.0.2.1", 3478), duration=0.1)


def test_rss_of_this_process():
    assert memory.rss_kib(os.getpid()) > 1000


def test_abuse_measures_every_request_kind():
    ratios = abuse.reply_ratios()
    kinds = {row["kind"]: row for row in ratios}
    assert set(abuse.unverified_udp_requests()) <= set(kinds)
    for row in ratios:
        if not row["verified"] and not row["kind"].startswith("STUN"):
            assert row["reply_bytes"] <= row["request_bytes"], row
    assert kinds["TCP ping, logged in"]["replies"] == 1 and kinds["UDP login echoing its cookie"]["replies"] == 1


def test_memory_with_a_few_peers():
    r = memory.bench(peers=50, concurrency=10)
    assert r["logged_in"] == 50 and r["failed"] == 0
    assert r["rss_kib"] >= r["rss_idle_kib"] > 0


def test_markdown_names_the_machine_and_the_ratio():
    results = {"date": "d", "machine": bench.machine(), "skipped": {"lab": "no root"},
               "stun": {"duration_s": 3, "sockets": 8, "window": 16, "ratio": 0.25,
                        "dp2pt": {"rate": 100.0, "server_cpu_per_s": 1.0},
                        "coturn": {"rate": 400.0, "server_cpu_per_s": 0.8, "gen_cpu_s": 2.0}}}
    md = bench.markdown(results)
    assert "cores" in md and "0.25" in md and "| lab | skipped |" in md


def test_markdown_has_the_all_cores_and_per_cpu_rows():
    one = {"rate": 100.0, "server_cpu_per_s": 0.5, "per_cpu_s": 200.0}
    results = {"date": "d", "machine": bench.machine(), "skipped": {},
               "stun": {"duration_s": 3, "sockets": 8, "window": 16, "workers": 2, "ratio": 1.0,
                        "per_cpu_ratio": 1.5, "ratio_all_cores": 2.5, "per_cpu_ratio_all_cores": 1.25,
                        "dp2pt": one, "coturn": one, "dp2pt_all_cores": one, "coturn_all_cores": one}}
    md = bench.markdown(results)
    assert "all cores: dp2pt --stun-workers 2" in md and "| 1.25 |" in md and "| 1.5 |" in md


def test_server_cpu_counts_its_workers():
    """A server's CPU is its whole process tree: --stun-workers are child processes."""
    import subprocess
    import sys

    burn = "import time\nwhile time.process_time() < 0.3: pass\nprint('done', flush=True)\ntime.sleep(20)"
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"  # it has used 0.3 s of CPU, however busy the machine
        assert stun.tree_cpu_seconds(os.getpid()) >= stun.proc_cpu_seconds(os.getpid()) + 0.25
    finally:
        child.kill()
        child.wait()


def test_bad_part_is_a_user_error(capsys):
    assert bench.main(["--parts", "nope", "--out", "/tmp/x.json"]) == 2
    assert "unknown part" in capsys.readouterr().err
    assert bench.main(["--parts", ",", "--out", "/tmp/x.json"]) == 2  # not an empty table over the last results
    assert "names no part" in capsys.readouterr().err


def test_percentile_nearest_rank():
    from lab.bench.labruns import percentile

    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([], 99) is None


def test_lab_rows_name_variants_pairs_and_ratios():
    from lab.bench.labruns import table_rows

    results = {"traversal": {"pair": ["a", "b"], "variants": {"basic": {"runs": 100, "direct": 100, "median_ms": 5.0,
               "p99_ms": 9.0, "packets_per_success": 13.0}}, "pairs": [{"nat_a": "a", "nat_b": "b", "variant": "basic",
               "runs": 2, "direct": 0, "packets_sent": 30, "packets_per_success": None}]},
               "updown": {"netns": {"up_s": 0.9, "down_s": 0.03, "runs": 3}},
               "path": {"pair": "a/b", "window": 16, "rate_ratio": 1.1, "rtt_ratio": 0.9,
                        "direct": {"rate": 3000.0, "count": 2000, "rtt_median_ms": 0.3, "rtt_p99_ms": 1.0},
                        "relay": {"rate": 2700.0, "count": 2000, "rtt_median_ms": 0.33, "rtt_p99_ms": 1.2}}}
    text = "\n".join(" | ".join(r) for r in table_rows(results))
    assert "median 5.0 ms, p99 9.0 ms" in text and "no success" in text and "0.9 s / 0.03 s" in text
    assert "1.1" in text and "0.9" in text


def test_directory_bench_small_run_counts_logins_connects_and_redis():
    """One server without Redis and two sharing one: every login and session counted, Redis's share seen."""
    from lab.bench import directory
    from lab.errors import MissingTool
    from lab.world import redis

    try:
        redis.require()
    except MissingTool as exc:
        pytest.skip(str(exc))
    r = directory.bench(servers=(2,), peers=60, pairs=6)
    ref, two = r["configs"]
    assert (ref["servers"], two["servers"]) == (0, 2) and not ref["directory"] and two["directory"]
    for c in (ref, two):
        assert c["logins"] == 60 and c["connects"] == 6 and c["login_failures"] == c["connect_failures"] == 0
    assert two["redis_commands_per_login"] >= 1 and two["redis_commands_per_connect"] > 2  # lookups cross Redis
    assert "redis_bytes_per_peer" not in ref
    md = "\n".join(directory.markdown_rows(r))
    assert "Logins/s, 2 servers sharing one Redis" in md and "Redis is the limit at" in md
