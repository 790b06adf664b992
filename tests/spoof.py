"""Forged-source UDP datagrams on 127.0.0.0/8 through a raw socket (root only), for the attack tests.

Only loopback addresses are accepted, and every caller sends a bounded number of datagrams.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

import pytest

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="forged source addresses need a raw socket (root)")


def udp_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 + UDP packet; the kernel fills in the IP checksum, the UDP checksum is left out (RFC 768)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    return ip + udp


class Spoofer:
    """Sends UDP datagrams with any 127.0.0.0/8 source to a 127.0.0.0/8 destination."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        for host in (src[0], dst[0]):
            if ipaddress.ip_address(host) not in LOOPBACK:
                raise ValueError(f"forged datagrams stay on 127.0.0.0/8, not {host}")
        self.sock.sendto(udp_packet(src, dst, payload), (dst[0], 0))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Spoofer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
