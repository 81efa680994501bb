"""The chaos run's clients: publishers with confirms, consumers with manual acks.

Each is an asyncio task with one connection at a time (``warren.cli.amqp_bench``'s small
client), moving to the next node's URL whenever its connection fails, so a client of a
killed or paused node carries on elsewhere, as one behind HAProxy would (a client of a
node cut off by a partition stays: its connection lives, so the minority's behaviour is
seen). Every body is a unique message id (8 bytes, then padding); what was attempted,
confirmed, nacked and delivered goes to the :class:`~warren.cli.chaos.checker.Ledger`, and
confirm and delivery times per queue and per node to ``Stats`` for the availability
figures and the timeline.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field

from pamqp import commands as spec

from warren.cli.amqp_bench import (
    BenchClient,
    BenchError,
    ack_frame,
    connect,
    content_prefix,
    publish_frames,
)
from warren.cli.chaos.checker import Ledger

RECONNECT_SECONDS = 0.3
CONNECT_TIMEOUT = 3.0
_ID = struct.Struct(">qQ")  # the message id where the bench client reads its stamp


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    confirms: dict[str, list[float]] = field(default_factory=dict)  # queue -> confirm times (s since start)
    deliveries: list[float] = field(default_factory=list)
    node_confirms: dict[str, list[float]] = field(default_factory=dict)  # node the client is on -> times
    node_deliveries: dict[str, list[float]] = field(default_factory=dict)
    placement: dict[str, str] = field(default_factory=dict)  # client ("publisher 0") -> node it is on
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (when, publish-to-confirm seconds)
    failed_connects: int = 0  # connection attempts that failed (a node down or paused)

    def now(self) -> float:
        return time.monotonic() - self.started


class ChaosPublisher:
    def __init__(self, index: int, endpoints: list[tuple[str, str]], queue: str, ledger: Ledger, stats: Stats,
                 window: int, size: int) -> None:
        self.index = index
        self.endpoints = endpoints  # (node name, AMQP URL)
        self.queue = queue
        self.ledger = ledger
        self.stats = stats
        self.window = window
        self.size = max(size, _ID.size)
        self.sequence = 0

    def next_id(self) -> int:
        self.sequence += 1
        return (self.index + 1) << 40 | self.sequence

    async def run(self, until: float) -> None:
        attempt = self.index
        while time.monotonic() < until:
            node, url = self.endpoints[attempt % len(self.endpoints)]
            attempt += 1
            try:
                client = await connect(url, CONNECT_TIMEOUT, name="warren-chaos")
                await client.call(spec.Confirm.Select(), spec.Confirm.SelectOk, timeout=CONNECT_TIMEOUT)
            except (BenchError, OSError):
                self.stats.failed_connects += 1
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            self.stats.placement[f"publisher {self.index}"] = node
            try:
                await self._publish(client, until, self.stats.node_confirms.setdefault(node, []))
            finally:
                if client.transport is not None:
                    client.transport.close()

    async def _publish(self, client: BenchClient, until: float, node_confirms: list[float]) -> None:
        prefix, chunk = content_prefix(self.queue, self.size, True, client.frame_max)
        padding = b"\x00" * (self.size - _ID.size)
        outstanding: dict[int, tuple[int, float]] = {}  # delivery tag -> (message id, sent at)
        tags = 0
        room = asyncio.Event()
        room.set()
        confirms = self.stats.confirms.setdefault(self.queue, [])

        def on_confirm(tag: int, multiple: bool, nack: bool) -> None:
            done = [t for t in outstanding if t <= tag] if multiple else [tag]
            now = self.stats.now()
            for t in done:
                entry = outstanding.pop(t, None)
                if entry is None:
                    continue
                message_id, sent = entry
                if nack:
                    self.ledger.nacked.add(message_id)
                else:
                    self.ledger.confirmed.add(message_id)
                    confirms.append(now)
                    node_confirms.append(now)
                    self.stats.latencies.append((now, now - sent))
            room.set()

        client.on_confirm = on_confirm
        while time.monotonic() < until and not client.lost.done():
            while len(outstanding) < self.window and time.monotonic() < until:
                tags += 1
                message_id = self.next_id()
                self.ledger.attempted.add(message_id)
                outstanding[tags] = (message_id, self.stats.now())
                client.write(publish_frames(prefix, chunk, _ID.pack(message_id, 0) + padding))
            room.clear()
            waits = [asyncio.ensure_future(room.wait()), client.lost]
            await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            waits[0].cancel()
        # unconfirmed when the connection went: attempted, outcome unknown (never "nacked")


class ChaosConsumer:
    def __init__(self, index: int, endpoints: list[tuple[str, str]], queue: str, ledger: Ledger, stats: Stats,
                 prefetch: int) -> None:
        self.index = index
        self.endpoints = endpoints  # (node name, AMQP URL)
        self.queue = queue
        self.ledger = ledger
        self.stats = stats
        self.prefetch = prefetch
        self.last_delivery = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        attempt = self.index
        while not stop.is_set():
            node, url = self.endpoints[attempt % len(self.endpoints)]
            attempt += 1
            node_deliveries = self.stats.node_deliveries.setdefault(node, [])
            try:
                client = await connect(url, CONNECT_TIMEOUT, name="warren-chaos")
                await client.call(spec.Basic.Qos(prefetch_count=self.prefetch), spec.Basic.QosOk,
                                  timeout=CONNECT_TIMEOUT)
                acks: list[bytes] = []

                def on_delivery(tag: int, redelivered: bool, stamp: int, acks: list[bytes] = acks,
                                node_deliveries: list[float] = node_deliveries) -> None:
                    self.ledger.delivered(stamp, redelivered)
                    now = self.stats.now()
                    self.stats.deliveries.append(now)
                    node_deliveries.append(now)
                    self.last_delivery = time.monotonic()
                    acks.append(ack_frame(tag))

                def flush(client: BenchClient = client, acks: list[bytes] = acks) -> None:
                    if acks and client.transport is not None and not client.transport.is_closing():
                        client.write(b"".join(acks))
                    acks.clear()

                client.on_delivery = on_delivery
                client.on_chunk_done = flush
                await client.call(spec.Basic.Consume(queue=self.queue, consumer_tag=f"chaos-{self.index}-{attempt}"),
                                  spec.Basic.ConsumeOk, timeout=CONNECT_TIMEOUT)
                self.stats.placement[f"consumer {self.index}"] = node
            except (BenchError, OSError):
                self.stats.failed_connects += 1
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([stopping, client.lost], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if stop.is_set():
                await client.close()
            elif client.transport is not None:
                client.transport.close()
