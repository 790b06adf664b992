"""STUN on a path built for it: batched receive and send, plain Binding requests answered in place.

One :class:`StunPort` serves one UDP socket.  ``drain()`` reads up to :data:`BATCH` datagrams with one
``recvmmsg`` call, answers each plain Binding request (20 bytes: no attribute, the only request most
clients send) by writing the answer over the request in the receive buffer, and sends the run of
answers with one ``sendmmsg`` call whose destinations are the very source addresses the kernel wrote.
Per datagram that is a few memoryview reads and writes: no parsing, no Message object, no bytes
object.  The answer's fixed part is a template made once per socket by the sans-IO
:func:`dp2pt.proto.stun_server.answer` itself, so both paths give the same bytes (tests/test_stun_fast.py
checks it on golden requests).

Everything else goes the general way, in order: any other STUN datagram to
:func:`~dp2pt.proto.stun_server.answer` (RFC 3489 attributes, CHANGE-REQUEST, FINGERPRINT, 420s),
and on the main port every non-STUN datagram to the control protocol's callback (``other``).

Where libc has no ``recvmmsg`` (not Linux), or with ``batch=0``, the same port reads one datagram
per ``recvfrom`` and answers everything through the sans-IO path.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import select
import socket
import struct
from collections import Counter
from typing import Callable

from dp2pt.errors import RemoteProtocolError, internal_error
from dp2pt.proto import stun
from dp2pt.proto.stun_server import StunAddresses, answer

log = logging.getLogger("dp2pt.stun")

Address = tuple[str, int]

BATCH = 64  # datagrams per recvmmsg
SLOT = 4160  # bytes per datagram buffer: the largest control message (4096) and some; multiple of 64
NAME = 32  # bytes per source address buffer (sockaddr_in6 is 28)
DRAIN_BATCHES = 16  # batches per drain() call, so that one busy socket does not starve the others
MSG_DONTWAIT = 0x40
PLAIN_LENGTH = stun.HEADER_LENGTH  # a Binding request with no attribute

_NATIVE_U32 = struct.Struct("=I")
_BINDING_REQUEST = _NATIVE_U32.unpack(struct.pack("!HH", stun.Method.BINDING | stun.Class.REQUEST, 0))[0]
_COOKIE = _NATIVE_U32.unpack(struct.pack("!I", stun.COOKIE))[0]
_COOKIE_HIGH = struct.unpack("=H", struct.pack("!H", stun.COOKIE >> 16))[0]


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint32)]


def _libc_mmsg() -> tuple[Callable[..., int], Callable[..., int]] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    return recv, send


_MMSG = _libc_mmsg()


def sockaddr(names: bytearray | memoryview, offset: int) -> Address:
    """The (host, port) of a sockaddr_in / sockaddr_in6 the kernel wrote at ``offset``."""
    family = struct.unpack_from("=H", names, offset)[0]
    port = struct.unpack_from("!H", names, offset + 2)[0]
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, bytes(names[offset + 8:offset + 24])), port
    return socket.inet_ntoa(bytes(names[offset + 4:offset + 8])), port


class _Batch:
    """recvmmsg/sendmmsg buffers of one socket: BATCH slots of datagram + source address.

    The receive headers are restored from a pristine copy before each call (the kernel overwrites
    their address lengths); the send headers point at the same buffers and addresses, with the
    answer length of the plain answer, so a run of answers needs no per-datagram header write.
    """

    def __init__(self, fd: int, answer_length: int) -> None:
        self.fd = fd
        self.data = bytearray(BATCH * SLOT)
        self.names = bytearray(BATCH * NAME)
        self._recv = (_MMsgHdr * BATCH)()
        self._send = (_MMsgHdr * BATCH)()
        self._recv_iov = (_IoVec * BATCH)()
        self._send_iov = (_IoVec * BATCH)()
        data = ctypes.addressof(ctypes.c_char.from_buffer(self.data))
        names = ctypes.addressof(ctypes.c_char.from_buffer(self.names))
        for i in range(BATCH):
            for hdrs, iovs, length, namelen in ((self._recv, self._recv_iov, SLOT, NAME),
                                                (self._send, self._send_iov, answer_length, 16)):
                iovs[i].base, iovs[i].len = data + i * SLOT, length
                hdr = hdrs[i].hdr
                hdr.name, hdr.namelen = names + i * NAME, namelen
                hdr.iov, hdr.iovlen = ctypes.addressof(iovs[i]), 1
        self._pristine = bytes(self._recv)
        self.lengths = memoryview(self._recv).cast("B").cast("I")  # msg_len of slot i at i*STRIDE+LEN
        self.stride = ctypes.sizeof(_MMsgHdr) // 4
        self.len_index = _MMsgHdr.len.offset // 4

    def recv(self) -> int:
        """Datagrams now in the slots (0 when none are waiting)."""
        assert _MMSG is not None
        ctypes.memmove(self._recv, self._pristine, len(self._pristine))
        n = _MMSG[0](self.fd, self._recv, BATCH, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.EINTR, errno.ECONNREFUSED):
                raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
            return 0
        return n

    def send(self, start: int, stop: int) -> int:
        """Send the plain answers in slots start..stop-1; returns how many the kernel took."""
        assert _MMSG is not None
        sent = 0
        while start + sent < stop:
            n = _MMSG[1](self.fd, ctypes.byref(self._send, (start + sent) * ctypes.sizeof(_MMsgHdr)),
                         stop - start - sent, MSG_DONTWAIT)
            if n <= 0:
                break  # a full send buffer: the rest is dropped (the client retransmits)
            sent += n
        return sent


class StunPort:
    """STUN (and, on the main port, the hand-off of everything else) on one UDP socket.

    Args:
        sock: the bound, non-blocking socket.
        local: the address it is bound to (the RESPONSE-ORIGIN of its plain answers).
        addrs: the server's STUN addresses (RFC 5780 mode or not).
        sockets: every STUN socket of this process by local address (CHANGE-REQUEST answers leave
            from another one).
        stats: counters to add to.
        other: where non-STUN datagrams go (the control protocol); None on STUN-only ports.
        batch: False to use one recvfrom per datagram and the sans-IO path only.
    """

    def __init__(self, sock: socket.socket, local: Address, addrs: StunAddresses,
                 sockets: dict[Address, socket.socket], stats: Counter[str],
                 other: Callable[[bytes, Address], None] | None = None, batch: bool = True) -> None:
        self.sock = sock
        self.local = local
        self.addrs = addrs
        self.sockets = sockets
        self.stats = stats
        self.other = other
        modern = self._template(b"\x21\x12\xa4\x42" + bytes(12))
        classic = self._template(bytes(16))
        self._head, self._tail, self._classic_tail = modern[:4], modern[20:], classic[20:]
        self._answer_length = len(modern)
        self._batch = _Batch(sock.fileno(), len(modern)) if batch and _MMSG is not None else None

    def _template(self, cookie_and_id: bytes) -> bytes:
        """The sans-IO answer to a plain request from 0.0.0.0:0, whose mapped address comes first."""
        request = struct.pack("!HH", stun.Method.BINDING | stun.Class.REQUEST, 0) + cookie_and_id
        reply = answer(request, ("0.0.0.0", 0), self.local, self.addrs)
        assert reply is not None and reply.via == self.local and reply.data[20:22] in (b"\x00\x20", b"\x00\x01")
        return reply.data

    def drain(self) -> None:
        """Serve what is waiting on the socket (up to DRAIN_BATCHES batches); never raises on bad input."""
        try:
            if self._batch is None:
                self._drain_single()
                return
            for _ in range(DRAIN_BATCHES):
                n = self._batch.recv()
                if n == 0:
                    return
                self._serve(n)
                if n < BATCH:
                    return
        except Exception as exc:  # a bug met by some packet: counted and logged on one line, never a traceback
            internal_error(self.stats, log, "STUN port {}:{}".format(*self.local[:2]), exc)

    def _drain_single(self) -> None:
        for _ in range(DRAIN_BATCHES * BATCH):
            try:
                data, addr = self.sock.recvfrom(SLOT)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                return
            self._general(data, addr[:2])

    def _serve(self, n: int) -> None:
        """Answer plain Binding requests in place and send them in runs; the rest in order, one by one."""
        batch = self._batch
        assert batch is not None
        data, lengths, stride, len_index = batch.data, batch.lengths, batch.stride, batch.len_index
        words = memoryview(data).cast("I")
        halves = memoryview(data).cast("H")
        name_words = memoryview(batch.names).cast("I")
        name_halves = memoryview(batch.names).cast("H")
        head, tail, classic_tail, end = self._head, self._tail, self._classic_tail, self._answer_length
        start = answered = 0
        for i in range(n):
            off = i * SLOT
            w = off >> 2
            a = i * NAME
            if (lengths[i * stride + len_index] == PLAIN_LENGTH and words[w] == _BINDING_REQUEST
                    and name_halves[a >> 1] == socket.AF_INET):
                data[off:off + 4] = head
                if words[w + 1] == _COOKIE:  # XOR-MAPPED-ADDRESS (RFC 8489 §14.2)
                    data[off + 20:off + end] = tail
                    halves[(off + 26) >> 1] = name_halves[(a + 2) >> 1] ^ _COOKIE_HIGH
                    words[w + 7] = name_words[(a + 4) >> 2] ^ _COOKIE
                else:  # RFC 3489: MAPPED-ADDRESS, the same bytes as the source address
                    data[off + 20:off + end] = classic_tail
                    halves[(off + 26) >> 1] = name_halves[(a + 2) >> 1]
                    words[w + 7] = name_words[(a + 4) >> 2]
                answered += 1
                continue
            if start < i:
                self._sent(start, i)
            start = i + 1
            self._general(bytes(data[off:off + lengths[i * stride + len_index]]), sockaddr(batch.names, a))
        if start < n:
            self._sent(start, n)
        self.stats["stun_binding"] += answered
        self.stats["stun_fast"] += answered

    def _sent(self, start: int, stop: int) -> None:
        assert self._batch is not None
        dropped = (stop - start) - self._batch.send(start, stop)
        if dropped:
            self.stats["stun_send_dropped"] += dropped

    def _general(self, data: bytes, addr: Address) -> None:
        """One datagram the fast path does not take: STUN through the sans-IO path, the rest to ``other``."""
        if not stun.looks_like_stun(data):
            if self.other is not None:
                self.other(data, addr)
            else:
                self.stats["not_stun"] += 1
            return
        try:
            reply = answer(data, addr, self.local, self.addrs)
        except RemoteProtocolError:
            self.stats["malformed_stun"] += 1
            return
        if reply is None:
            self.stats["stun_ignored"] += 1
            return
        try:
            self.sockets[reply.via].sendto(reply.data, reply.to)
        except (BlockingIOError, InterruptedError):
            self.stats["stun_send_dropped"] += 1
            return
        except OSError:
            self.stats["udp_errors"] += 1
            return
        for counter in reply.counters:
            self.stats[counter] += 1


def serve(ports: list[StunPort], stop: int) -> None:
    """Serve ``ports`` until ``stop`` (a pipe's read end, or a worker's stdin) is readable or closed.

    This is the loop of the server's STUN thread and of each worker process: one poll() per wake-up,
    then every ready socket drained in batches.  It holds the GIL only while it answers; the
    server's event loop (control) runs whenever this thread waits in poll, recvmmsg or sendmmsg.
    """
    by_fd = {port.sock.fileno(): port for port in ports}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    poller.register(stop, select.POLLIN | select.POLLHUP)
    while True:
        for fd, _event in poller.poll():
            if fd == stop:
                return
            by_fd[fd].drain()
