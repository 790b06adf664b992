"""Seeded, bounded fuzzing of every server port and every control message type.

Every row of the message table is mutated (fields dropped, retyped, oversized, nested, bytes flipped,
truncated) and sent: over TCP before login, over TCP and UDP after login *signed with the login key*
(so the mutations reach the registry, not just the MAC check), over UDP from an unverified address
to all four STUN/control ports of an RFC 5780 server, and over a trusted federation link.  The server
must count, refuse or answer all of it without one internal error, and an honest pair must still go
direct afterwards.

STUN gets structured mutants of its own (:func:`stun_mutant`: attribute types, lengths and padding,
unknown comprehension-required attributes, FINGERPRINT, CHANGE-REQUEST, RESPONSE-PORT, PADDING) at
every STUN port, with and without ``--stun-workers``: no internal error, at most one answer per
request, and none more than :data:`ANSWER_GROWTH` bytes larger than its request.
"""

import asyncio
import json
import random
import select
import socket
import struct

import pytest

from dp2pt.aio.control import TcpControl, UdpControl
from dp2pt.errors import Dp2ptError
from dp2pt.proto import messages, stun
from tests.loopback import location_server, pair
from tests.test_e2e_loopback import check_direct

SEED = 13
MUTANTS_PER_TYPE = 40  # per channel: 5 channels x 20 types x 40 = 4,000 messages
FEDERATION_IP = "127.0.0.2"
FUZZ_IP = "127.0.0.3"  # where the anonymous UDP mutants come from
ALT_IP = "127.0.0.4"  # the server's second address: RFC 5780 mode, four STUN sockets
STUN_MUTANTS = 300  # per server configuration and seed
STUN_WORKERS = 2
ANSWER_GROWTH = 36  # README, "Answer sizes": no STUN answer is more than 36 bytes larger than its request

#: Values that break assumptions: wrong types, extremes, non-ASCII, lone surrogates, deep nesting.
NASTY = [None, True, False, -1, 0, 2**64, -(2**63), 1e308, 0.5, "", "x" * 3000, "\u00e9" * 50, "\ud800",
         "A", "127.0.0.1", "0" * 32, [], {}, [[[]]], {"type": "ping"}, [["127.0.0.1", 3478]],
         {"type": "login", "id": "A"}, "::ffff:127.0.0.1", "00112233445566ff", 65536, 70000]


def example(type_: str, session: str) -> dict:
    """A well-formed message of ``type_`` built from the table (plausible values, a live session id)."""
    by_field = {"session": session, "target": "fz-a", "variant": "basic", "schedule": "diagram1", "k": 1,
                "ip": "127.0.0.1", "port": 40000, "role": "A", "id": "fz-a", "to": "fz-a", "from": "fz-b",
                "key": "0" * 32, "msg": {"type": "report", "session": session, "ip": "127.0.0.1", "port": 1,
                                         "delta": 1}}
    kinds = {str: "s", int: 1, bool: True, list: [], dict: {"type": "pong"}}
    return {"type": type_, **{f: by_field.get(f, kinds[k]) for f, k in messages.MESSAGES[type_].items()}}


def mutate(msg: dict, rng: random.Random) -> dict:
    """One structural mutation of a message (the result may still be valid)."""
    msg = dict(msg)
    fields = [f for f in msg if f != "type"] or ["type"]
    op = rng.randrange(5)
    if op == 0:
        msg.pop(rng.choice(fields), None)
    elif op == 1:
        msg[rng.choice(fields)] = rng.choice(NASTY)
    elif op == 2:
        msg[rng.choice([*messages.OPTIONAL, "token"])] = rng.choice(NASTY)
    elif op == 3:
        msg["type"] = rng.choice([*messages.MESSAGES, "", "nope", 7])
    else:
        msg[rng.choice(fields)] = {"deep": json.loads("[" * 9 + "]" * 9)}
    return msg


def to_bytes(msg: dict, rng: random.Random) -> bytes:
    """Encode, then sometimes damage the bytes (truncate, flip, splice a newline)."""
    data = json.dumps(msg).encode()
    op = rng.randrange(6)
    if op == 0 and len(data) > 2:
        data = data[: rng.randrange(1, len(data))]
    elif op == 1:
        i = rng.randrange(len(data))
        data = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]
    elif op == 2:
        data = data.replace(b",", b"\n", 1)
    return data


def mutants(session: str, rng: random.Random):
    for type_ in messages.MESSAGES:
        for _ in range(MUTANTS_PER_TYPE):
            yield mutate(example(type_, session), rng)


async def _discard(recv) -> None:
    try:
        while True:
            await recv()
    except (Dp2ptError, OSError):
        pass


async def fuzz_tcp_anonymous(addr, session, rng):
    reader, writer = await asyncio.open_connection(*addr)
    drain = asyncio.ensure_future(reader.read(-1))
    for msg in mutants(session, rng):
        if writer.is_closing() or drain.done():  # an oversized line or a hello closes it: reconnect
            reader, writer = await asyncio.open_connection(*addr)
            drain = asyncio.ensure_future(reader.read(-1))
        writer.write(to_bytes(msg, rng) + b"\n")
        await writer.drain()
    writer.close()
    drain.cancel()


async def fuzz_signed(control, session, rng, send_raw, pace=0.0):
    """Mutants signed with the login key, so they pass the MAC check and reach the registry.

    ``pace``: seconds between datagrams over UDP, where the server (in this process) takes at most
    a few datagrams of one address per turn of its loop and drops the rest unread, which is the
    flood bound working, not the fuzz reaching the registry.
    """
    reader = asyncio.ensure_future(_discard(control.recv))
    for msg in mutants(session, rng):
        try:
            data = control.link.send(msg, 0.0)
        except Dp2ptError:  # too large to send once signed: send it unsigned instead
            data = to_bytes(msg, rng)
        send_raw(data if rng.random() < 0.8 else to_bytes(json.loads(data), rng))
        await asyncio.sleep(pace)
    reader.cancel()


async def fuzz_federation(addr, session, rng):
    reader, writer = await asyncio.open_connection(*addr, local_addr=(FEDERATION_IP, 0))
    writer.write(b'{"type":"hello","server":"fuzz"}\n')
    drain = asyncio.ensure_future(reader.read(-1))
    for msg in mutants(session, rng):
        if writer.is_closing() or drain.done():
            break
        writer.write(to_bytes(msg, rng) + b"\n")
        await writer.drain()
    writer.close()
    drain.cancel()


#: Seconds between UDP mutants (see fuzz_signed).
UDP_PACE = 0.0005


async def fuzz_udp_anonymous(addrs, session, rng):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((FUZZ_IP, 0))
        probe = bytes(stun.binding_request())
        for msg in mutants(session, rng):
            data = to_bytes(msg, rng) if rng.random() < 0.9 else probe[: rng.randrange(len(probe) + 1)]
            s.sendto(data, rng.choice(addrs))
            await asyncio.sleep(UDP_PACE)


@pytest.mark.parametrize("seed", [SEED])
def test_fuzzing_every_port_and_message_type_causes_no_internal_error(seed):
    rng = random.Random(seed)

    async def main():
        async with location_server(accept=[FEDERATION_IP], alt_ip=ALT_IP) as server:
            tcp, udp = server.addresses["tcp"], server.addresses["udp"]
            a = await TcpControl.open(tcp, 2.0)
            await a.login({"type": "login", "id": "fz-a"}, 2.0)
            b = await UdpControl.open(udp, 2.0)
            await b.login({"type": "login", "id": "fz-b"}, 2.0)
            await b.send({"type": "connect", "target": "fz-a", "variant": "basic", "k": 1, "schedule": "diagram1"})
            await asyncio.sleep(0.1)
            (session,) = server.registry.sessions  # a live session, so mutants reach the session table
            await fuzz_tcp_anonymous(tcp, session, rng)
            await fuzz_signed(a, session, rng, lambda d: a._writer.write(d + b"\n"))
            await fuzz_signed(b, session, rng, b._transport.sendto, pace=UDP_PACE)
            await fuzz_federation(tcp, session, rng)
            await fuzz_udp_anonymous(server.stun_addresses.sockets(), session, rng)
            await asyncio.sleep(0.3)
            a.close(), b.close()
            honest_tcp = await pair(server)
            honest_udp = await pair(server, udp_control=True)
            return server.snapshot(), honest_tcp, honest_udp

    stats, honest_tcp, honest_udp = asyncio.run(main())
    check_direct(*honest_tcp)
    check_direct(*honest_udp)
    assert stats.get("internal_errors", 0) == 0, stats
    # The mutants reached every layer: parsing, authentication, the registry, the federation.
    reached = {k: stats.get(k, 0) for k in ("malformed_tcp", "malformed_udp", "registry_rejected", "rejected_udp")}
    assert all(reached.values()), reached
    assert stats.get("unauthenticated_tcp", 0) + stats.get("unauthenticated_udp", 0) > 0


#: Attribute types beyond the table: unknown comprehension-required ones (a 420) and optional ones.
UNKNOWN_REQUIRED = [0x0000, 0x0007, 0x0011, 0x0030, 0x7FFF]
UNKNOWN_OPTIONAL = [0x8000, 0x8050, 0xC001, 0xFFFF]
CHANGE_FLAGS = [0, stun.CHANGE_IP, stun.CHANGE_PORT, stun.CHANGE_IP | stun.CHANGE_PORT]


def _client_attributes(rng, ports):
    """Well-formed attributes a client may put in a Binding request: (type, value) pairs."""
    values = {
        "CHANGE-REQUEST": lambda: struct.pack("!I", rng.choice(CHANGE_FLAGS)),
        "RESPONSE-PORT": lambda: struct.pack("!HH", rng.choice(ports), 0),
        "PADDING": lambda: bytes(rng.choice([1, 4, 100, 512, 1000])),
        "USERNAME": lambda: rng.randbytes(rng.randrange(1, 20)),
        "SOFTWARE": lambda: b"dp2pt fuzz",
        "PRIORITY": lambda: rng.randbytes(4),
        "USE-CANDIDATE": lambda: b"",
        "MESSAGE-INTEGRITY": lambda: rng.randbytes(20),
        "ICE-CONTROLLING": lambda: rng.randbytes(8),
    }
    return [[stun.BY_NAME[name][0], values[name]()] for name in rng.sample(sorted(values), rng.randrange(5))]


def stun_mutant(rng, ports):
    """A Binding request with well-formed client attributes and a FINGERPRINT half the time, then up
    to two mutations: unknown comprehension-required or optional attributes, RFC 3489's
    RESPONSE-ADDRESS, a length field or value size that is wrong, missing padding, RESPONSE-PORT 0,
    CHANGE-REQUEST with any bits, a FINGERPRINT wrong or not last, no magic cookie (RFC 3489), another
    method or class, a header length that does not fit, a cut datagram.  RESPONSE-PORT names one of
    ``ports`` (the fuzzer's own sockets), so every answer comes back to be measured."""
    attrs = [[t, v, None, True] for t, v in _client_attributes(rng, ports)]  # + length field (None: right), padded
    mtype, cookie, length_delta, cut = 0x0001, struct.pack("!I", stun.COOKIE), 0, False
    fingerprint = rng.choice(["", "right"])
    for _ in range(rng.randrange(3)):
        op = rng.randrange(14)
        if op in (0, 1):
            unknown = rng.choice(UNKNOWN_REQUIRED if op == 0 else UNKNOWN_OPTIONAL)
            attrs.insert(rng.randrange(len(attrs) + 1), [unknown, rng.randbytes(rng.choice([0, 4, 7])), None, True])
        elif op == 2:
            attrs.append([0x0002, stun.BY_NAME["RESPONSE-ADDRESS"][2]((FUZZ_IP, ports[0]), b""), None, True])
        elif op in (3, 4, 5) and attrs:
            a = rng.choice(attrs)
            if op == 3:
                a[2] = rng.choice([len(a[1]) + 4, max(len(a[1]) - 1, 0), 0xFFFF])
            elif op == 4:
                a[1] = rng.randbytes(rng.choice([0, 1, 3, 5, 8, 20]))
            else:
                a[3] = False
        elif op in (6, 7):  # RESPONSE-PORT 0, CHANGE-REQUEST with any bits
            attrs.append([stun.BY_NAME["RESPONSE-PORT" if op == 6 else "CHANGE-REQUEST"][0],
                          rng.randbytes(4) if op == 7 else bytes(4), None, True])
        elif op == 8:
            fingerprint = "wrong"
        elif op == 9:
            fingerprint = "first"
        elif op == 10:
            cookie = rng.randbytes(4)
        elif op == 11:
            mtype = rng.choice([0x0011, 0x0101, 0x0111, 0x0002, 0x3FFF])
        elif op == 12:
            length_delta = rng.choice([-4, -1, 4, 100])
        else:
            cut = True
    body = b"".join(struct.pack("!HH", t, len(v) if n is None else n) + v + (bytes(-len(v) % 4) if pad else b"")
                    for t, v, n, pad in attrs)
    extra = stun.FINGERPRINT_LENGTH if fingerprint else 0
    data = struct.pack("!HH", mtype, max(len(body) + extra + length_delta, 0)) + cookie + rng.randbytes(12)
    if fingerprint == "first":
        data += struct.pack("!HHI", 0x8028, 4, rng.getrandbits(32)) + body
    else:
        data += body
        if fingerprint:
            crc = rng.getrandbits(32) if fingerprint == "wrong" else stun.fingerprint_of(data)
            data += struct.pack("!HHI", 0x8028, 4, crc)
    return data[:rng.randrange(len(data))] if cut else data


def _answers(socks, timeout):
    """Every datagram waiting on ``socks`` (waiting at most ``timeout`` for the first)."""
    got = []
    while select.select(socks, [], [], timeout)[0]:
        timeout = 0.02
        for s in socks:
            try:
                while True:
                    got.append(s.recv(4096))
            except BlockingIOError:
                pass
    return got


@pytest.mark.parametrize("workers", [0, STUN_WORKERS], ids=["one process", "workers"])
@pytest.mark.parametrize("seed", [SEED])
def test_stun_mutants_at_every_stun_port_cause_no_internal_error_and_no_amplification(seed, workers):
    rng = random.Random(seed)
    requests, answers = {}, []

    async def main():
        async with location_server(alt_ip=ALT_IP, stun_workers=workers) as server:
            targets = server.stun_addresses.sockets()
            socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            try:
                for s in socks:  # the second one receives what RESPONSE-PORT sends elsewhere
                    s.bind((FUZZ_IP, 0))
                    s.setblocking(False)
                ports = [s.getsockname()[1] for s in socks]
                for i in range(STUN_MUTANTS):
                    data = stun_mutant(rng, ports)
                    requests.setdefault(data[4:20], len(data))
                    socks[0].sendto(data, rng.choice(targets))
                    if i % 20 == 19:  # answers read in small batches: a socket buffer holds ~200
                        await asyncio.sleep(0.005)
                        answers.extend(_answers(socks, 0))
                answers.extend(_answers(socks, 0.3))
                honest = {}
                for target in targets:  # every port still answers a plain request
                    probe = stun.binding_request()
                    requests[bytes(probe)[4:20]] = len(bytes(probe))
                    socks[0].sendto(bytes(probe), target)
                    late = _answers(socks[:1], 2.0)
                    answers.extend(late)  # a mutant's late answer is judged like the others
                    honest[target] = any(a[8:20] == probe.transaction_id for a in late)
            finally:
                for s in socks:
                    s.close()
        return server.snapshot(), honest  # after close: the workers' counters are in

    stats, honest = asyncio.run(main())
    assert stats.get("internal_errors", 0) == 0, stats
    assert all(honest.values()), honest
    unmatched = [a for a in answers if a[4:20] not in requests]
    assert not unmatched, unmatched[:3]
    per_request = {}
    for a in answers:
        per_request[a[4:20]] = per_request.get(a[4:20], 0) + 1
        assert len(a) - requests[a[4:20]] <= ANSWER_GROWTH, (len(a), requests[a[4:20]], a)
    assert per_request and max(per_request.values()) == 1  # answers came, one per request at most
    # The mutants reached every branch: answers, 420s, changed addresses, refusals.
    reached = {k: stats.get(k, 0) for k in ("stun_binding", "stun_420", "stun_changed", "malformed_stun")}
    assert all(reached.values()), reached
    if workers:
        assert stats.get("stun_binding_by_workers", 0) > 0, stats


if __name__ == "__main__":  # a longer run than CI's one seed: python3 -m tests.test_fuzz [SEEDS]
    import sys

    for n in range(int(sys.argv[1]) if len(sys.argv) > 1 else 100):
        test_fuzzing_every_port_and_message_type_causes_no_internal_error(SEED + 1 + n)
        for w in (0, STUN_WORKERS):
            test_stun_mutants_at_every_stun_port_cause_no_internal_error_and_no_amplification(SEED + 1 + n, w)
        print(f"seed {SEED + 1 + n}: no internal error, honest pairs direct, no STUN answer too large", flush=True)
