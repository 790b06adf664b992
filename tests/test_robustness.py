"""Garbage, truncated and oversized input at every server port: counted, dropped, and the server keeps serving."""

import asyncio
import os
import random
import socket

from dp2pt.proto import stun
from tests.loopback import location_server, pair


def garbage_datagrams():
    rng = random.Random(7)
    request = bytes(stun.binding_request())
    bad_attr = stun.binding_request()
    yield b""
    yield b"\x00"
    yield request[:10]  # truncated header
    yield request[:4] + request[4:8] + bytes(12) + b"\x00\x20\x00\x08\x00"  # truncated attribute
    yield bytes(bad_attr)[:2] + b"\x00\x40" + bytes(bad_attr)[4:]  # length says 64, none follows
    yield request[:2] + b"\x00\x08" + request[4:] + b"\x00\x20\x00\x14" + bytes(4)  # attribute runs past the end
    yield bytes(request)[:2] + b"\x00\x08" + request[4:] + b"\x80\x28\x00\x04" + bytes(4)  # wrong FINGERPRINT
    yield os.urandom(1500)
    yield bytes(rng.randrange(256) for _ in range(60000))  # oversized
    yield b'{"type":"login"'  # truncated JSON
    yield b'{"type":"login","id":""}'
    yield b'{"type":"connect","token":"forged","target":"A","variant":"basic","k":1,"schedule":"diagram1"}'
    yield b'{"type":"ack","n":99}'
    yield b"D2PT" + bytes(20)  # a direct datagram sent to the server: not its business
    yield b'{"type":"' + b"x" * 5000 + b'"}'
    yield b'{"type":"login","id":' + b"[" * 2000 + b"]" * 2000 + b"}"  # was a RecursionError


def garbage_lines():
    yield b"\n"
    yield b"not json\n"
    yield b'{"type":"report","token":"x","session":"s","ip":"1","port":"p","delta":1}\n'
    yield b'{"type":"lookup","q":1,"id":"A"}\n'  # a federation message from a peer
    yield b'{"type":"upstream","from":"A","msg":{}}\n'
    yield b'{"type":"ping","x":' + b"[" * 2000 + b"]" * 2000 + b"}\n"  # was "Unhandled exception in client_connected_cb"
    yield os.urandom(3000).replace(b"\n", b"") + b"\n"
    yield b"x" * 10000 + b"\n"  # oversized line: the connection is closed


def test_server_survives_garbage_on_every_port():
    async def main():
        async with location_server() as server:
            udp_ports = [server.addresses["udp"], server.addresses["alt"]]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for addr in udp_ports:
                    for data in garbage_datagrams():
                        try:
                            s.sendto(data, addr)
                        except OSError:
                            pass  # a datagram too large for the kernel to send
            reader, writer = await asyncio.open_connection(*server.addresses["tcp"])
            for line in garbage_lines():
                writer.write(line)
            await writer.drain()
            await asyncio.sleep(0.2)
            closed = await asyncio.wait_for(reader.read(), 2.0)  # the server answered errors, then closed
            writer.close()
            half = await asyncio.open_connection(*server.addresses["tcp"])
            half[1].write(b'{"type":"login","id":"half"')  # truncated, never finished
            a, b = await pair(server)
            half[1].close()
            return a, b, server.snapshot(), closed

    a, b, stats, closed = asyncio.run(main())
    assert a["ok"] and b["ok"]
    assert stats["malformed_stun"] >= 2 * 2
    assert stats["malformed_udp"] >= 8 and stats["not_stun"] >= 8  # control is on the main port only
    assert stats["malformed_tcp"] >= 3 and stats["oversized_tcp"] == 1
    assert stats["not_logged_in"] >= 2 and stats["rejected_udp"] >= 2
    assert b"log in first" in closed
    assert stats.get("internal_errors", 0) == 0
