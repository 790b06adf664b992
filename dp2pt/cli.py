"""The ``dp2pt`` command: ``dp2pt server`` and ``dp2pt peer ... listen|connect``.

Every failure a user can cause ends in one line on stderr (``dp2pt: error: ...``) and a non-zero
exit code (see docs/CONTRACT.md); results are one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import sys
from typing import Any, NoReturn, Sequence

from dp2pt.errors import ConfigError, Dp2ptError
from dp2pt.proto.admission import LOGIN_TIMEOUT, MAX_CONNS_PER_IP
from dp2pt.proto.directory import MIN_SECRET
from dp2pt.proto.messages import VARIANTS
from dp2pt.proto.schedules import SCHEDULES, get_schedule

Address = tuple[str, int]
SECRET_ENV = "DP2PT_DIRECTORY_SECRET"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"dp2pt: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def address(text: str) -> Address:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` too)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return int(text)


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


#: More STUN workers than this per core only add processes that wait for the same CPUs.
WORKERS_PER_CORE = 4


def _workers(text: str) -> int:
    import os

    n, most = _count(text), WORKERS_PER_CORE * (os.cpu_count() or 1)
    if n > most:
        raise argparse.ArgumentTypeError(f"{text} workers on {os.cpu_count()} cores: at most {most}")
    return n


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _non_negative(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def _non_negative_seconds(text: str) -> float:
    return _non_negative(text, "a number of seconds (>= 0)")


def _k(text: str) -> int | str:
    return "auto" if text == "auto" else _positive(text)


def _rate(text: str) -> float:
    return _non_negative(text, "a rate (new flows per ms, >= 0)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dp2pt", description="Direct peer-to-peer transmission between two NATed networks.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    server = commands.add_parser("server", help="run a location server")
    server.add_argument("--tcp", type=address, default=("0.0.0.0", 7000), help="TCP control address")
    server.add_argument("--udp", type=address, default=("0.0.0.0", 3478), help="UDP control + STUN address")
    server.add_argument("--alt-port", type=_port, help="STUN port of the second probe (default: UDP port + 1)")
    server.add_argument("--alt-ip", type=_ip, metavar="IP",
                        help="a second address of this host: RFC 5780 mode (OTHER-ADDRESS, CHANGE-REQUEST honoured)")
    server.add_argument("--stun-workers", type=_workers, default=0, metavar="N",
                        help=f"N more processes answering STUN on the same ports (SO_REUSEPORT; default 0, at most "
                             f"{WORKERS_PER_CORE} per core)")
    server.add_argument("--peer-server", type=address, action="append", default=[],
                        help="TCP address of another location server of the federation (repeatable)")
    server.add_argument("--accept-server", action="append", default=[], metavar="IP",
                        help="another server address allowed to link in (the --peer-server hosts always are)")
    server.add_argument("--directory", metavar="URL",
                        help="share a directory with other servers on Redis (redis://[USER:PASSWORD@]HOST:PORT; a "
                        "Redis Cluster is detected): any server reaches peers logged in at any other")
    server.add_argument("--directory-secret", metavar="FILE",
                        help=f"file with the secret every server of the directory shares (at least {MIN_SECRET} bytes; "
                        f"or set {SECRET_ENV})")
    server.add_argument("--name", help="this server's name in the federation or directory (default ls1; with "
                        "--directory HOSTNAME:TCPPORT)")
    server.add_argument("--max-conns", type=_positive, help="TCP connections in total (default: what the "
                        "descriptor limit allows, less a reserve)")
    server.add_argument("--max-conns-per-ip", type=_count, default=MAX_CONNS_PER_IP,
                        help=f"TCP connections (and UDP logins) from one address (default {MAX_CONNS_PER_IP}; 0: no cap)")
    server.add_argument("--login-timeout", type=_seconds, default=LOGIN_TIMEOUT,
                        help=f"seconds a TCP connection may take to log in (default {LOGIN_TIMEOUT:g})")
    server.add_argument("--json", action="store_true", help="(accepted for symmetry; output is always JSON)")

    peer = commands.add_parser("peer", help="run a peer agent")
    peer.add_argument("--id", required=True, help="this peer's id")
    peer.add_argument("--server", type=address, action="append", required=True,
                      help="location server (TCP, or UDP with --udp-control); repeat it, or give a name with several "
                      "addresses, for failover: tried in order")
    peer.add_argument("--retry", type=_non_negative_seconds, default=10.0,
                      help="seconds to keep trying the servers, at start and after losing one (default 10)")
    peer.add_argument("--udp-control", action="store_true", help="keep the login session over UDP instead of TCP")
    peer.add_argument("--bind", type=address, default=("0.0.0.0", 0), help="local address of the data socket")
    peer.add_argument("--stun", type=address, action="append", default=[], help="STUN server for the NAT test")
    peer.add_argument("--timeout", type=_seconds, default=10.0, help="seconds a session may take")
    peer.add_argument("--punch-timeout", type=_seconds, default=2.0, help="seconds to wait for a direct datagram")
    peer.add_argument("--rto", type=_seconds, default=0.2, help="STUN initial retransmission timeout")
    peer.add_argument("--order", choices=("sequential", "parallel"), default="sequential",
                      help="connect: sequential (the spec's: B tests its NAT after A's report) or parallel (both "
                           "test at once: three server round trips fewer)")
    peer.add_argument("--probe-burst", action="store_true",
                      help="send the second probe without waiting for the first answer (fewer cut-ins between them)")
    peer.add_argument("--discover-nat", action="store_true",
                      help="classify this side's NAT against the server's second address (RFC 5780) and report it; "
                           "an endpoint-independent mapping spares the other side its prediction")
    peer.add_argument("--count", type=_count, default=5, help="data datagrams each way")
    output = peer.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the JSON result line also on failure")
    output.add_argument("--human", action="store_true", help="print results as sentences instead of JSON")
    roles = peer.add_subparsers(dest="role", required=True, parser_class=_Parser)
    listen = roles.add_parser("listen", help="wait for peers to connect (role A)")
    listen.add_argument("--sessions", type=_count, default=1, help="sessions to serve before exiting (0: forever)")
    listen.add_argument("--allow", nargs="+", action="extend", metavar="ID",
                        help="only these peer ids may connect (to anyone else we look logged out)")
    connect = roles.add_parser("connect", help="open a direct path to another peer (role B)")
    connect.add_argument("target", help="id of the peer to reach")
    connect.add_argument("--variant", choices=VARIANTS, default="basic")
    connect.add_argument("--k", type=_k, default=None,
                         help="punch packets per side (improved; default 6; 'auto': from --cut-in-rate)")
    connect.add_argument("--cut-in-rate", type=_rate, help="measured new flows per ms on the NATs, for --k auto")
    connect.add_argument("--schedule", default="diagram1", help=f"hypothesis order (known: {', '.join(SCHEDULES)})")

    return parser


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, separators=(",", ":")), flush=True)


def describe(result: dict[str, Any]) -> str:
    """One sentence for a person reading a terminal (``--human``)."""
    what = f"{result['variant']}" + (f", k={result['k']} {result['schedule']}" if result["variant"] == "improved" else "")
    if not result["ok"]:
        return f"{result['id']} -> {result['peer']}: no direct path ({what}): {result['error']}"
    ip, port = result["remote_endpoint"]
    return (
        f"{result['id']} -> {result['peer']}: direct path to {ip}:{port} in {result['time_to_direct_ms']:.1f} ms "
        f"({what}; mapped {result['mapped'][0]}:{result['mapped'][1]} delta {result['delta']}; punch #{result['hit']} "
        f"got through; {result['data_received']}/{result['data_sent']} data datagrams; {result['packets_sent']} packets sent)"
    )


def _directory_options(args: argparse.Namespace) -> tuple[str, bytes]:
    """The server's name and the directory secret (from --directory-secret FILE or the environment)."""
    import os
    import socket

    from dp2pt.proto.directory import check_name, load_secret

    if args.directory is None:
        if args.directory_secret is not None:
            raise ConfigError("--directory-secret is for --directory")
        return args.name or "ls1", b""
    if args.peer_server or args.accept_server:
        raise ConfigError("--directory and --peer-server/--accept-server are two ways to federate: pick one")
    name = check_name(args.name or f"{socket.gethostname()}:{args.tcp[1]}")
    if args.directory_secret is not None:
        try:
            with open(args.directory_secret, "rb") as f:
                return name, load_secret(f.read(), args.directory_secret)
        except OSError as exc:
            raise ConfigError(f"cannot read --directory-secret {args.directory_secret}: {exc.strerror or exc}") from None
    if os.environ.get(SECRET_ENV):
        return name, load_secret(os.environ[SECRET_ENV].encode(), SECRET_ENV)
    raise ConfigError(f"--directory needs the secret all its servers share: --directory-secret FILE or {SECRET_ENV}")


async def _serve(args: argparse.Namespace) -> int:
    from dp2pt.aio.server import LocationServer, ServerConfig

    name, secret = _directory_options(args)
    config = ServerConfig(name=name, tcp=args.tcp, udp=args.udp, alt_port=args.alt_port, alt_ip=args.alt_ip,
                          stun_workers=args.stun_workers, peer_servers=args.peer_server,
                          accept_servers=args.accept_server, login_timeout=args.login_timeout,
                          max_conns=args.max_conns, max_conns_per_ip=args.max_conns_per_ip,
                          directory=args.directory, directory_secret=secret)
    if args.alt_port is None and args.udp[1] == 65535:
        raise ConfigError("--udp port 65535 leaves no room for the second probe's port: give --alt-port")
    server = LocationServer(config)
    try:
        await server.start()
    except OSError as exc:
        await server.close()
        raise ConfigError(f"cannot bind: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _emit({"event": "ready", "name": name, **{k: list(v) for k, v in server.addresses.items()}})
    await stop.wait()
    await server.close()  # first: the STUN workers report their counters when they stop
    _emit({"event": "stats", **server.snapshot()})
    return 0


async def _peer(args: argparse.Namespace) -> int:
    from dp2pt.aio.peer import Peer, PeerConfig

    config = PeerConfig(id=args.id, server=args.server[0], more_servers=args.server[1:], retry=args.retry,
                        udp_control=args.udp_control, bind=args.bind,
                        stun=args.stun, timeout=args.timeout, punch_timeout=args.punch_timeout,
                        count=args.count, rto=args.rto, probe_burst=args.probe_burst, discover_nat=args.discover_nat,
                        order=args.order,
                        allow=getattr(args, "allow", None))
    failures: list[dict[str, Any]] = []

    def report(result: dict[str, Any]) -> None:
        if args.human:
            print(describe(result), flush=True)
        elif result["ok"] or args.json:
            _emit(result)
        if not result["ok"]:
            failures.append(result)
            print(f"dp2pt: error: {result['error']}", file=sys.stderr, flush=True)

    if args.role == "connect":
        if args.variant != "improved" and args.k not in (None, 1):
            raise ConfigError(f"--k applies to the improved variant, not {args.variant}")
        if args.cut_in_rate is not None and args.k != "auto":
            raise ConfigError("--cut-in-rate is only used with --k auto")
        k = _choose_k(args) if args.k == "auto" else args.k or (6 if args.variant == "improved" else 1)
        get_schedule(args.schedule).first(k)
    def logged_in(server: Address) -> None:
        if args.role != "listen":
            return
        if args.human:
            print(f"{args.id}: logged in to {server[0]}:{server[1]}, waiting for peers", flush=True)
        else:
            _emit({"event": "ready", "id": args.id, "server": list(server)})

    async with Peer(config, on_login=logged_in) as peer:
        if args.role == "listen":
            await peer.listen(report, sessions=args.sessions)
        else:
            report(await peer.connect(args.target, args.variant, k, args.schedule))
    return failures[-1]["error_code"] or 6 if failures else 0


def _choose_k(args: argparse.Namespace) -> int:
    """Adaptive k (off unless asked): the fewest packets that cover the measured cut-in rate."""
    if args.cut_in_rate is None:
        raise ConfigError("--k auto needs --cut-in-rate (new flows per ms, e.g. from dp2pt.model.design.cut_in_rate)")
    from dp2pt.model.design import choose_k

    return choose_k(get_schedule(args.schedule), args.cut_in_rate)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        return asyncio.run(_serve(args) if args.command == "server" else _peer(args))
    except Dp2ptError as exc:
        print(f"dp2pt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
