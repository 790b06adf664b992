"""The ``dp2pt`` command line: one JSON result line on success, one error line and an exit code otherwise."""

import json
import subprocess
import time

import pytest

from tests.procs import DP2PT, free_port, run, server_process


def assert_one_line_error(proc, code, words):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dp2pt: error:") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_listen_and_connect_print_json_results():
    with server_process() as (_, tcp, _udp):
        server = f"{tcp[0]}:{tcp[1]}"
        listener = subprocess.Popen(DP2PT + ["peer", "--id", "A", "--server", server, "listen"],
                                    stdout=subprocess.PIPE, text=True)
        assert json.loads(listener.stdout.readline())["event"] == "ready"
        b = run("peer", "--id", "B", "--server", server, "connect", "A", "--variant", "improved", "--k", "4")
        a_line = listener.stdout.readline()
        assert listener.wait(10) == 0
    assert b.returncode == 0, b.stderr
    result_b, result_a = json.loads(b.stdout), json.loads(a_line)
    assert result_b["ok"] and result_b["direct"] and result_b["k"] == 4 and len(result_b["punch_ports"]) == 4
    assert result_a["ok"] and result_a["role"] == "A" and result_a["session"] == result_b["session"]


def test_human_output():
    with server_process() as (_, tcp, _udp):
        server = f"{tcp[0]}:{tcp[1]}"
        listener = subprocess.Popen(DP2PT + ["peer", "--id", "A", "--server", server, "--human", "listen"],
                                    stdout=subprocess.PIPE, text=True)
        assert "logged in" in listener.stdout.readline()
        b = run("peer", "--id", "B", "--server", server, "--human", "connect", "A")
        assert listener.wait(10) == 0
    assert b.returncode == 0
    assert b.stdout.startswith("B -> A: direct path to 127.0.0.1:") and "5/5 data datagrams" in b.stdout


def test_adaptive_k_grows_with_the_cut_in_rate():
    ks = []
    with server_process() as (_, tcp, _udp):
        server = f"{tcp[0]}:{tcp[1]}"
        for rate in ("0.01", "1.0"):
            listener = subprocess.Popen(DP2PT + ["peer", "--id", "A", "--server", server, "listen"],
                                        stdout=subprocess.PIPE, text=True)
            listener.stdout.readline()
            b = run("peer", "--id", "B", "--server", server, "connect", "A", "--variant", "improved",
                    "--schedule", "poisson-greedy", "--k", "auto", "--cut-in-rate", rate)
            listener.wait(10)
            assert b.returncode == 0, b.stderr
            ks.append(json.loads(b.stdout)["k"])
    assert 1 <= ks[0] < ks[1]


def test_server_unreachable():
    port = free_port(kind=1)
    proc = run("peer", "--id", "B", "--server", f"127.0.0.1:{port}", "--retry", "0", "connect", "A")
    assert_one_line_error(proc, 3, "cannot reach location server")


def test_server_unreachable_after_trying_every_server_for_the_retry_time():
    ports = [free_port(kind=1), free_port(kind=1)]
    started = time.monotonic()
    proc = run("peer", "--id", "B", "--server", f"127.0.0.1:{ports[0]}", "--server", f"localhost:{ports[1]}",
               "--retry", "1", "connect", "A")
    assert_one_line_error(proc, 3, "no location server of 2 answered in 1 s; last: cannot reach location server")
    assert 1.0 <= time.monotonic() - started < 10


def test_server_unreachable_over_udp_times_out_cleanly():
    port = free_port()
    proc = run("peer", "--id", "B", "--server", f"127.0.0.1:{port}", "--udp-control", "--timeout", "1",
               "--retry", "0", "connect", "A")
    assert_one_line_error(proc, 3, "location server")


def test_a_peer_started_before_its_server_waits_for_it():
    tcp, udp = free_port(kind=1), free_port(span=2)
    listener = subprocess.Popen(DP2PT + ["peer", "--id", "A", "--server", f"127.0.0.1:{tcp}", "--retry", "20", "listen"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = None
    try:
        time.sleep(1.0)
        assert listener.poll() is None  # still trying
        server = subprocess.Popen(DP2PT + ["server", "--tcp", f"127.0.0.1:{tcp}", "--udp", f"127.0.0.1:{udp}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = json.loads(listener.stdout.readline())
        assert ready["event"] == "ready" and ready["server"] == ["127.0.0.1", tcp]
    finally:
        for proc in (listener, server):
            if proc is not None:
                proc.terminate()
                proc.wait(5)


def test_udp_port_zero_puts_the_second_probe_on_a_free_port_too():
    """--udp HOST:0 (any free port) must not put STUN's alternate port on PORT+1 = 1."""
    server = subprocess.Popen(DP2PT + ["server", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(server.stdout.readline())
        udp, alt = ready["udp"][1], ready["alt"][1]
        assert alt >= 1024 and alt != udp, ready
    finally:
        server.terminate()
        server.wait(5)


def test_listen_allow_admits_only_the_named_peers():
    with server_process() as (_, tcp, _udp):
        server = f"{tcp[0]}:{tcp[1]}"
        listener = subprocess.Popen(DP2PT + ["peer", "--id", "A", "--server", server, "listen", "--allow", "B", "C"],
                                    stdout=subprocess.PIPE, text=True)
        assert json.loads(listener.stdout.readline())["event"] == "ready"
        stranger = run("peer", "--id", "D", "--server", server, "connect", "A")
        b = run("peer", "--id", "B", "--server", server, "connect", "A")
        assert listener.wait(10) == 0
    assert_one_line_error(stranger, 4, "no peer 'A' is logged in")  # exactly what a logged-out A looks like
    assert b.returncode == 0 and json.loads(b.stdout)["direct"], b.stderr


def test_unknown_peer():
    with server_process() as (_, tcp, _udp):
        proc = run("peer", "--id", "B", "--server", f"{tcp[0]}:{tcp[1]}", "connect", "nobody")
    assert_one_line_error(proc, 4, "no peer 'nobody'")


@pytest.mark.parametrize(
    "args, words",
    [
        (["peer", "--id", "B", "--server", "nowhere", "connect", "A"], "is not HOST:PORT"),
        (["peer", "--id", "B", "--server", "127.0.0.1:1", "connect", "A", "--variant", "turbo"], "invalid choice"),
        (["peer", "--id", "B", "--server", "127.0.0.1:1", "connect", "A", "--k", "0"], "positive integer"),
        (["peer", "--id", "B", "--server", "127.0.0.1:1", "connect", "A", "--k", "3"], "--k applies to the improved"),
        (["peer", "--id", "B", "--server", "127.0.0.1:1", "connect", "A", "--variant", "improved",
          "--schedule", "nope"], "unknown schedule"),
        (["peer", "--id", "B", "--server", "127.0.0.1:1", "connect", "A", "--variant", "improved", "--k", "auto"],
         "--k auto needs --cut-in-rate"),
        (["peer", "--id", "B", "--server", "127.0.0.1:1", "connect", "A", "--variant", "improved",
          "--cut-in-rate", "0.1"], "only used with --k auto"),
        (["peer", "--id", "A", "--server", "127.0.0.1:1", "listen", "--sessions", "-1"], "non-negative"),
        (["server", "--tcp", "127.0.0.1:99999"], "is not HOST:PORT"),
        (["server", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:65535"], "give --alt-port"),
        (["server", "--tcp", "127.0.0.1:0", "--alt-port", "70000"], "is not a port"),
        (["server", "--tcp", "127.0.0.1:0", "--alt-ip", "nope"], "is not an IP address"),
        (["server", "--tcp", "127.0.0.1:0", "--udp", "0.0.0.0:0", "--alt-ip", "127.0.0.2"], "not a wildcard"),
        (["server", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--alt-ip", "127.0.0.1"], "must differ"),
        (["server", "--tcp", "127.0.0.1:0", "--stun-workers", "-2"], "non-negative"),
        (["server", "--tcp", "127.0.0.1:0", "--stun-workers", "100000"], "at most"),
        (["server", "--login-timeout", "0"], "positive number of seconds"),
        (["server", "--max-conns", "0"], "positive integer"),
        (["peer", "--id", "A", "--server", "127.0.0.1:1", "listen", "--allow"], "expected at least one argument"),
        (["peer", "--id", "A", "--server", "127.0.0.1:1", "--retry", "-1", "listen"], "number of seconds"),
        (["server", "--directory", "redis://127.0.0.1:1"], "--directory needs the secret"),
        (["server", "--directory-secret", "/nonexistent"], "--directory-secret is for --directory"),
        (["server", "--directory", "redis://127.0.0.1:1", "--directory-secret", "/nonexistent"], "cannot read"),
        (["server", "--directory", "redis://127.0.0.1:1", "--peer-server", "127.0.0.1:1"], "two ways to federate"),
        (["server", "--directory", "redis://127.0.0.1:1", "--name", "a b"], "without spaces"),
        (["server", "--directory", "http://127.0.0.1:1", "--directory-secret", "/dev/null"], "give at least 16"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments(args, words):
    assert_one_line_error(run(*args), 2, words)


def test_data_socket_that_cannot_bind():
    with server_process() as (_, tcp, _udp):
        listener = subprocess.Popen(DP2PT + ["peer", "--id", "A", "--server", f"{tcp[0]}:{tcp[1]}", "listen"],
                                    stdout=subprocess.PIPE, text=True)
        listener.stdout.readline()
        proc = run("peer", "--id", "B", "--server", f"{tcp[0]}:{tcp[1]}", "--bind", "192.0.2.77:0", "connect", "A")
        listener.terminate()
        listener.wait(5)
    assert_one_line_error(proc, 2, "cannot bind the data socket")


def test_port_already_in_use():
    with server_process() as (_, tcp, udp):
        proc = run("server", "--tcp", f"{tcp[0]}:{free_port(kind=1)}", "--udp", f"{udp[0]}:{udp[1]}")
    assert_one_line_error(proc, 2, "cannot bind")


def test_timeout_when_the_other_peer_never_answers():
    """A peer that logs in but never runs its side: B's wait ends with a timeout, exit 5."""
    with server_process() as (_, tcp, _udp):
        import socket
        with socket.create_connection(tcp) as silent:
            silent.sendall(b'{"type":"login","id":"A"}\n')
            silent.recv(1000)
            proc = run("peer", "--id", "B", "--server", f"{tcp[0]}:{tcp[1]}", "--timeout", "1", "connect", "A")
    assert_one_line_error(proc, 5, "timed out")
