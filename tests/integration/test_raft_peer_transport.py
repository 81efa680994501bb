"""The peer transport on loopback: authentication, bad input, limits, batching, reconnects."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from warren.io.peer import PeerTransport, encode_frame, handshake_mac
from warren.limits import Limits

pytestmark = pytest.mark.timeout(30)

LIMITS = Limits(
    peer_max_message_bytes=64 * 1024,
    peer_reconnect_min_seconds=0.02,
    peer_reconnect_max_seconds=0.1,
    peer_handshake_timeout_seconds=1.0,
)


@dataclass
class Node:
    transport: PeerTransport
    received: list[tuple[int, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


def make_node(node_id: int, peers: list[int], secret: bytes, limits: Limits = LIMITS) -> Node:
    node: Node

    def on_message(peer: int, msg: Any) -> None:
        node.received.append((peer, msg))
        node.arrived.set()

    transport = PeerTransport(
        node_id,
        ("127.0.0.1", 0),
        {p: ("127.0.0.1", 1) for p in peers},
        secret,
        on_message,
        limits,
        random.Random(node_id),
    )
    node = Node(transport)
    return node


async def start_pair(
    secret_a: bytes, secret_b: bytes, limits_b: Limits = LIMITS
) -> tuple[Node, Node]:
    a, b = make_node(1, [2], secret_a), make_node(2, [1], secret_b, limits_b)
    await a.transport.start_listening()
    await b.transport.start_listening()
    a.transport.set_peer_address(2, ("127.0.0.1", b.transport.port))
    b.transport.set_peer_address(1, ("127.0.0.1", a.transport.port))
    a.transport.start_dialing()
    b.transport.start_dialing()
    return a, b


async def wait_received(node: Node, count: int) -> None:
    async def wait() -> None:
        while len(node.received) < count:
            node.arrived.clear()
            await node.arrived.wait()

    await asyncio.wait_for(wait(), 10)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    a, b = await start_pair(b"secret", b"secret")
    yield a, b
    await a.transport.stop()
    await b.transport.stop()


async def test_messages_flow_both_ways_in_order(pair: tuple[Node, Node]) -> None:
    a, b = pair
    for i in range(500):
        a.transport.send(2, {"seq": i, "data": b"x" * 10})
    b.transport.send(1, ["hello", 2])
    await wait_received(b, 500)
    await wait_received(a, 1)
    assert [m["seq"] for _, m in b.received] == list(range(500))
    assert {p for p, _ in b.received} == {1}
    assert a.received == [(2, ["hello", 2])]


async def test_messages_queued_in_one_loop_iteration_leave_in_one_write(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    await asyncio.wait_for(a.transport.wait_for(lambda: a.transport.connected_to() == {2}), 10)
    writer = a.transport._outbound[2].writer
    assert writer is not None
    writes: list[int] = []
    original = writer.write

    def counting_write(data: Any) -> None:
        writes.append(len(data))
        original(data)

    writer.write = counting_write  # type: ignore[method-assign]
    for i in range(100):
        a.transport.send(2, i)
    await wait_received(b, 100)
    assert len(writes) == 1


async def test_wrong_secret_is_refused_both_ways(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "warren.peer")
    a, b = await start_pair(b"secret", b"other")
    try:
        a.transport.send(2, "must not arrive")
        b.transport.send(1, "must not arrive")
        await asyncio.sleep(0.5)  # several reconnect attempts
        assert a.transport.connected_to() == set() and b.transport.connected_to() == set()
        assert a.received == [] and b.received == []
        assert "failed the shared-secret handshake" in caplog.text
    finally:
        await a.transport.stop()
        await b.transport.stop()


async def raw_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def assert_closed_by_peer(reader: asyncio.StreamReader) -> None:
    try:
        while await asyncio.wait_for(reader.read(65536), 5):
            pass  # the handshake reply, if any; then EOF
    except ConnectionResetError:
        pass  # closed with our unread bytes in its buffer


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        (3).to_bytes(4, "big") + b"\xc1\xc1\xc1",
        encode_frame({"hello": "not a node id"}),
        encode_frame([1, 2, 3]),
    ],
)
async def test_garbage_is_refused_and_the_node_keeps_working(
    pair: tuple[Node, Node], garbage: bytes
) -> None:
    a, b = pair
    reader, writer = await raw_connection(b.transport.port)
    writer.write(garbage)
    await assert_closed_by_peer(reader)
    writer.close()
    assert b.transport.refused_connections >= 1
    a.transport.send(2, "still alive")
    await wait_received(b, 1)
    assert b.received == [(1, "still alive")]


async def authenticated_raw_connection(
    b: Node, secret: bytes, my_id: int = 1
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    from warren.io.peer import FrameDecoder

    reader, writer = await raw_connection(b.transport.port)
    nonce = b"n" * 32
    writer.write(encode_frame({"hello": 1, "from": my_id, "to": 2, "nonce": nonce}))
    reply = FrameDecoder(1024).feed(await reader.read(4096))[0]
    writer.write(
        encode_frame({"mac": handshake_mac(secret, "dialer", reply["nonce"], nonce, my_id, 2)})
    )
    return reader, writer


async def test_oversize_frame_after_handshake_drops_the_connection(
    pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "warren.peer")
    a, b = pair
    await a.transport.stop()  # the raw connection below takes node 1's place
    reader, writer = await authenticated_raw_connection(b, b"secret")
    writer.write(encode_frame("fits"))
    await wait_received(b, 1)
    writer.write(encode_frame(b"x" * (LIMITS.peer_max_message_bytes + 1)))
    await assert_closed_by_peer(reader)
    writer.close()
    assert "exceeds the limit" in caplog.text
    assert b.received == [(1, "fits")]


async def test_unauthenticated_peer_cannot_send_large_frames(pair: tuple[Node, Node]) -> None:
    a, b = pair
    reader, writer = await raw_connection(b.transport.port)
    writer.write((60_000).to_bytes(4, "big"))  # under the message limit, over the handshake one
    await assert_closed_by_peer(reader)
    writer.close()


async def test_replayed_proof_with_a_different_nonce_is_refused(pair: tuple[Node, Node]) -> None:
    a, b = pair
    reader, writer = await raw_connection(b.transport.port)
    writer.write(encode_frame({"hello": 1, "from": 1, "to": 2, "nonce": b"n" * 32}))
    await reader.read(4096)
    # A proof computed for some other listener nonce (as a recorded handshake would hold).
    writer.write(
        encode_frame({"mac": handshake_mac(b"secret", "dialer", b"old" * 8, b"n" * 32, 1, 2)})
    )
    await assert_closed_by_peer(reader)
    writer.close()
    assert b.received == []


async def test_reconnects_after_the_peer_restarts() -> None:
    a, b = await start_pair(b"secret", b"secret")
    port_b = b.transport.port
    try:
        a.transport.send(2, "before")
        await wait_received(b, 1)
        await b.transport.stop()
        await asyncio.wait_for(a.transport.wait_for(lambda: not a.transport.connected_to()), 10)
        b2 = make_node(2, [1], b"secret")
        b2.transport.listen = ("127.0.0.1", port_b)
        b2.transport.set_peer_address(1, ("127.0.0.1", a.transport.port))
        await b2.transport.start()
        try:
            await asyncio.wait_for(
                a.transport.wait_for(lambda: a.transport.connected_to() == {2}), 10
            )
            a.transport.send(2, "after")
            await wait_received(b2, 1)
            assert b2.received == [(1, "after")]
        finally:
            await b2.transport.stop()
    finally:
        await a.transport.stop()


async def test_an_oversize_message_is_dropped_by_the_sender_and_the_rest_flows(
    pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "warren.peer")
    a, b = pair
    a.transport.send(2, "first")
    await wait_received(b, 1)
    a.transport.send(2, b"x" * (LIMITS.peer_max_message_bytes + 1))
    a.transport.send(2, "after")  # queued in the same turn as the oversize one
    await wait_received(b, 2)
    assert b.received == [(1, "first"), (1, "after")]
    assert a.transport.oversize_dropped == 1
    assert b.transport.refused_connections == 0  # the connection was never broken
    assert "over peer_max_message_bytes" in caplog.text


async def test_the_secret_never_crosses_the_wire() -> None:
    """Every byte between two nodes, both ways, through a relay: the handshake proves the
    secret without sending it, and the traffic after it does not carry it either."""
    secret = b"s3cr3t-that-must-stay-home"
    a, b = make_node(1, [2], secret), make_node(2, [1], secret)
    await b.transport.start_listening()
    captured = bytearray()
    relays: list[asyncio.Task[None]] = []

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                captured.extend(data)
                writer.write(data)
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await raw_connection(b.transport.port)
        relays.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    a.transport.set_peer_address(2, ("127.0.0.1", proxy.sockets[0].getsockname()[1]))
    await a.transport.start_listening()
    a.transport.start_dialing()
    try:
        a.transport.send(2, {"hello": "over the relay"})
        await wait_received(b, 1)
        assert b.received == [(1, {"hello": "over the relay"})]
        assert len(captured) > 100  # the handshake and the message went through the relay
        assert secret not in captured
    finally:
        await a.transport.stop()
        await b.transport.stop()
        proxy.close()
        for task in relays:
            task.cancel()
