"""asyncio side of client connections: sockets in, node inputs out, bytes back.

Each accepted socket gets an :class:`AMQPProtocol`. Everything it reads goes to the node as
an input; the node answers by filling each session's outbound buffer. Outbound bytes are
flushed once per event-loop iteration (coalesced writes), and reading stops while a socket's
write buffer is full or the node blocks publishers (back-pressure, never unbounded buffers).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from warren.node.node import Node
    from warren.session.client import ClientSession

log = logging.getLogger(__name__)


class AMQPProtocol(asyncio.Protocol):
    def __init__(self, node: Node, flusher: Flusher, tls: bool) -> None:
        self._node = node
        self._flusher = flusher
        self._tls = tls
        self.transport: asyncio.Transport | None = None
        self.session: ClientSession | None = None
        self.reading_paused = False
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername") or ("?", 0)
        local = transport.get_extra_info("sockname") or ("?", 0)
        transport.set_write_buffer_limits(high=self._node.limits.max_outbound_buffer_bytes // 4)
        self.session = self._node.open_session(self, peer[0], int(peer[1]), local[0], int(local[1]), self._tls)
        if self.session is None:  # refused (connection limit): the node already queued nothing
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self.session is None:
            return
        self._node.client_data(self.session, data)
        self._flusher.schedule()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self._node.client_lost(self.session)
            self.session = None
            self._flusher.schedule()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.session is not None:
            self._node.client_writable(self.session, False)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.session is not None:
            self._node.client_writable(self.session, True)
            self._flusher.schedule()

    # called by the node
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def set_reading(self, enabled: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if enabled and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        elif not enabled and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()


class Flusher:
    """Runs the node's output flush once per loop iteration, however many inputs arrived."""

    def __init__(self, loop: asyncio.AbstractEventLoop, node: Node) -> None:
        self._loop = loop
        self._node = node
        self._scheduled = False

    def schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self._node.flush()


async def start_amqp_listener(
    loop: asyncio.AbstractEventLoop,
    node: Node,
    flusher: Flusher,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> asyncio.Server:
    tls = ssl_context is not None
    return await loop.create_server(
        lambda: AMQPProtocol(node, flusher, tls),
        host=host,
        port=port,
        ssl=ssl_context,
        reuse_address=True,
        backlog=1024,
    )
