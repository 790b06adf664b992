#!/usr/bin/env python3
"""A plain UDP hole punch that knows nothing of dp2pt: the kind of program a user brings to the lab.

It learns its public address with one STUN Binding request (RFC 8489, 20 bytes by hand), swaps it
with the other peer through the lab's rendezvous (``PUT``/``GET`` text lines over TCP), then sends
hellos to the address the other peer saw for itself and answers whatever arrives from that peer's
IP (at most 200 datagrams, 20 per second). That works behind cone NATs and fails behind two symmetric ones: each NAT gives the hellos a
new port the other side never learns. It prints one JSON result line and exits 0 if it reached
the peer, 1 if not. Everything it needs comes from the lab's environment (lab/README.md, Agents):
LAB_ROLE, LAB_SESSION, LAB_RENDEZVOUS, LAB_STUN, LAB_TIMEOUT. Standard library only.
"""

import json
import os
import socket
import struct
import sys
import time

MAGIC_COOKIE = 0x2112A442
HELLO_EVERY = 0.05  # seconds
MAX_HELLOS = 200  # bounded, whatever happens


def hostport(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def stun_mapped_address(sock, server, deadline):
    """Our public (ip, port) as the STUN server saw it: XOR-MAPPED-ADDRESS of a Binding response."""
    txid = os.urandom(12)
    request = struct.pack("!HHI", 0x0001, 0, MAGIC_COOKIE) + txid
    while time.monotonic() < deadline:
        sock.sendto(request, server)
        sock.settimeout(0.2)
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            continue
        if len(data) < 20 or data[8:20] != txid:
            continue
        pos = 20
        while pos + 4 <= len(data):
            kind, length = struct.unpack_from("!HH", data, pos)
            if kind == 0x0020 and length >= 8:  # XOR-MAPPED-ADDRESS, IPv4
                port = struct.unpack_from("!H", data, pos + 6)[0] ^ (MAGIC_COOKIE >> 16)
                ip = struct.unpack_from("!I", data, pos + 8)[0] ^ MAGIC_COOKIE
                return socket.inet_ntoa(struct.pack("!I", ip)), port
            pos += 4 + (length + 3) // 4 * 4
    raise TimeoutError("no STUN answer")


def rendezvous(address, *lines):
    """Send request lines to the lab's rendezvous, return the answers."""
    with socket.create_connection(address, timeout=30) as conn:
        reader = conn.makefile("r")
        answers = []
        for line in lines:
            conn.sendall(line.encode() + b"\n")
            answers.append(reader.readline().rstrip("\n"))
        return answers


def main():
    env = os.environ
    role, session = env["LAB_ROLE"], env["LAB_SESSION"]
    other = "B" if role == "A" else "A"
    deadline = time.monotonic() + float(env.get("LAB_TIMEOUT", "10"))
    result = {"program": "udp_punch", "role": role, "connected": False, "peer": None, "sent": 0, "received": 0}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    try:
        mine = stun_mapped_address(sock, hostport(env["LAB_STUN"]), deadline)
        wait = max(deadline - time.monotonic() - 1, 0.1)
        _, answer = rendezvous(hostport(env["LAB_RENDEZVOUS"]), f"PUT {session}/udp/{role} {mine[0]}:{mine[1]}",
                               f"GET {session}/udp/{other} {min(wait, 60):.1f}")
        if not answer.startswith("VALUE "):
            raise TimeoutError(f"rendezvous: {answer}")
        peer = hostport(answer[len("VALUE "):])
        result["public"], result["advertised_peer"] = list(mine), list(peer)
        # "hello <role> <heard>": keep saying hello (with whether we heard the peer) until the peer
        # says it heard us, then say it twice more so the peer knows we heard it too.
        started, next_hello, heard, peer_heard, acks = time.monotonic(), 0.0, False, False, 0
        target = peer
        while time.monotonic() < deadline and not (peer_heard and acks >= 2) and result["sent"] < MAX_HELLOS:
            if time.monotonic() >= next_hello:
                sock.sendto(f"hello {role} {int(heard)}".encode(), target)
                result["sent"] += 1
                acks += heard and peer_heard
                next_hello = time.monotonic() + HELLO_EVERY
            sock.settimeout(max(min(next_hello, deadline) - time.monotonic(), 0.001))
            try:
                data, src = sock.recvfrom(2048)
            except socket.timeout:
                continue
            if src[0] != peer[0] or not data.startswith(b"hello "):
                continue
            result["received"] += 1
            if not heard:
                heard, target = True, src  # answer where it came from
                result["connected"], result["peer"] = True, list(src)
                result["time_ms"] = round((time.monotonic() - started) * 1000, 1)
            peer_heard = peer_heard or data.endswith(b" 1")
            next_hello = 0.0  # answer at once
    except (OSError, TimeoutError, KeyError, ValueError) as exc:
        result["error"] = str(exc) or type(exc).__name__
    print(json.dumps(result), flush=True)
    return 0 if result["connected"] else 1


if __name__ == "__main__":
    sys.exit(main())
