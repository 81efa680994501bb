"""The AMQP benchmark behind ``warren bench``: any broker, confirmed publishes/s, deliveries/s, latency.

Each publisher and each consumer is its own process with its own connection (so the client
uses every core it is given), running a small hand-written AMQP 0-9-1 client: pamqp encodes
and decodes the handshake and the rare methods, ``struct`` the hot ones (publish, deliver,
ack, confirms). Every body starts with the publish time (``time.monotonic_ns``, the same
clock in every process of the machine) and a sequence number; the consumer computes the
publish-to-delivery latency from it.

The parent declares the queue, waits for the consumers to be subscribed, starts the
publishers, shows progress, then waits for the consumers to have received every confirmed
message (or for ``drain_timeout`` without progress) and prints the figures.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import ssl
import struct
import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_FRAME_HEAD = struct.Struct(">BHI")
_INDEX = struct.Struct(">I")
_SETTLE = struct.Struct(">QB")
_U64 = struct.Struct(">Q")
_STAMP = struct.Struct(">qQ")  # publish time (monotonic ns), sequence number
_ACK_FRAME = struct.Struct(">BHIHHQBB")
_PUBLISH_CONTENT = struct.Struct(">BBHIHHQHB")  # frame-end, header frame head, class, weight, size, flags, delivery mode
_BODY_HEAD = struct.Struct(">BBHI")  # frame-end of the header, body frame head

_DELIVER = (60 << 16) | 60
_ACK = (60 << 16) | 80
_NACK = (60 << 16) | 120
STAMP_BYTES = _STAMP.size
CLIENT_FRAME_MAX = 131072


class BenchError(Exception):
    """An operating error with a one-line message for the user (unreachable broker, refused login...)."""


@dataclass
class BenchConfig:
    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    publishers: int = 1
    consumers: int = 1
    size: int = 1024
    confirm_window: int = 100  # unconfirmed publishes per publisher; 0 = no confirms
    prefetch: int = 100  # basic.qos per consumer; 0 = unlimited
    queue_type: str = "classic"
    persistent: bool = True
    duration: float | None = 10.0  # seconds of publishing, unless messages is set
    messages: int | None = None  # total messages across publishers
    queue: str | None = None  # default: a fresh durable queue, deleted at the end
    drain_timeout: float = 30.0  # seconds without a delivery before giving up on the rest
    connect_timeout: float = 10.0


@dataclass
class BenchResult:
    broker: str
    queue: str
    queue_type: str
    publishers: int
    consumers: int
    size: int
    confirm_window: int
    prefetch: int
    persistent: bool
    published: int = 0
    confirmed: int = 0
    nacked: int = 0
    delivered: int = 0
    redelivered: int = 0
    publish_seconds: float = 0.0
    deliver_seconds: float = 0.0
    publish_rate: float = 0.0  # confirmed publishes/s (published/s without confirms)
    deliver_rate: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- connection parameters -----------------------------------------------------------------


@dataclass
class UrlParams:
    host: str
    port: int
    user: str
    password: str
    vhost: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> UrlParams:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise BenchError(f"--url must start with amqp:// or amqps://, not {url!r}")
        tls = parts.scheme == "amqps"
        try:
            port = parts.port or (5671 if tls else 5672)
        except ValueError as exc:
            raise BenchError(f"bad port in --url {redact(url)}: {exc}") from None
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            user=unquote(parts.username) if parts.username is not None else "guest",
            password=unquote(parts.password) if parts.password is not None else "guest",
            vhost=unquote(path) if path else "/",
            tls=tls,
        )


def redact(url: str) -> str:
    """The URL without its password, for messages and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


# ---- a minimal AMQP client -------------------------------------------------------------------


class BenchClient(asyncio.Protocol):
    """One connection with one channel (number 1). Hot frames by hand, the rest with pamqp."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[Any] | None = None
        self._expect: tuple[type, ...] = ()
        self.error: str | None = None
        self.frame_max = CLIENT_FRAME_MAX
        self.lost = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        # confirms (publisher side)
        self.on_confirm: Any = None  # callable(tag, multiple, nack)
        # deliveries (consumer side)
        self.on_delivery: Any = None  # callable(delivery_tag, redelivered, stamp_ns)
        self.on_chunk_done: Any = None  # called once per data_received after its frames
        self._body_left = 0
        self._delivery_tag = 0
        self._redelivered = False
        self._stamp_wanted = False
        self._stamp_buf = b""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = f"connection lost: {exc}" if exc else "the broker closed the connection"
        self._fail(BenchError(self.error))
        if not self.lost.done():
            self.lost.set_result(None)
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end_all = len(buf)
        head = _FRAME_HEAD.unpack_from
        while end_all - pos >= 8:
            ftype, channel, size = head(buf, pos)
            end = pos + 7 + size
            if end >= end_all:
                break
            start = pos + 7
            if ftype == 3:  # body
                if self._stamp_wanted:
                    self._stamp_buf += bytes(buf[start:start + STAMP_BYTES - len(self._stamp_buf)])
                    if len(self._stamp_buf) >= STAMP_BYTES:
                        self._stamp_wanted = False
                self._body_left -= size
                if self._body_left <= 0:
                    self._delivered()
            elif ftype == 1:
                index = _INDEX.unpack_from(buf, start)[0]
                if index == _DELIVER:
                    tag_len = buf[start + 4]
                    at = start + 5 + tag_len
                    self._delivery_tag = _U64.unpack_from(buf, at)[0]
                    self._redelivered = bool(buf[at + 8] & 1)
                elif index == _ACK or index == _NACK:
                    tag, bits = _SETTLE.unpack_from(buf, start + 4)
                    if self.on_confirm is not None:
                        self.on_confirm(tag, bool(bits & 1), index == _NACK)
                else:
                    self._method(channel, bytes(buf[pos:end + 1]))
            elif ftype == 2:  # content header: class, weight, body size
                self._body_left = _U64.unpack_from(buf, start + 4)[0]
                self._stamp_buf = b""
                self._stamp_wanted = True
                if self._body_left == 0:
                    self._delivered()
            pos = end + 1
        if pos:
            del buf[:pos]
        if self.on_chunk_done is not None:
            self.on_chunk_done()

    def _delivered(self) -> None:
        stamp = _STAMP.unpack(self._stamp_buf[:STAMP_BYTES])[0] if len(self._stamp_buf) >= STAMP_BYTES else 0
        self._stamp_wanted = False
        if self.on_delivery is not None:
            self.on_delivery(self._delivery_tag, self._redelivered, stamp)

    def _method(self, channel: int, raw: bytes) -> None:
        try:
            _consumed, _channel, method = pamqp_frame.unmarshal(raw)
        except Exception as exc:  # noqa: BLE001 - a broker's garbage ends the benchmark
            self.abort(f"cannot decode a frame from the broker: {exc}")
            return
        if isinstance(method, spec.Connection.Close):
            self.error = f"the broker closed the connection: {method.reply_code} {method.reply_text}"
            self.send(spec.Connection.CloseOk(), 0)
            self._fail(BenchError(self.error))
            return
        if isinstance(method, spec.Channel.Close):
            self.error = f"the broker closed the channel: {method.reply_code} {method.reply_text}"
            self.send(spec.Channel.CloseOk(), channel)
            self._fail(BenchError(self.error))
            return
        if isinstance(method, spec.Basic.Cancel):
            self.abort(f"the broker cancelled the consumer {method.consumer_tag!r}")
            return
        if self._waiter is not None and isinstance(method, self._expect) and not self._waiter.done():
            self._waiter.set_result(method)

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def abort(self, reason: str) -> None:
        self.error = reason
        self._fail(BenchError(reason))
        if self.transport is not None:
            self.transport.close()

    # sending
    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def send(self, method: Any, channel: int = 1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(pamqp_frame.marshal(method, channel))

    async def call(self, method: Any, *expect: type, channel: int = 1, timeout: float = 30.0) -> Any:
        if self.error is not None:
            raise BenchError(self.error)
        self._waiter = asyncio.get_running_loop().create_future()
        self._expect = expect
        self.send(method, channel)
        try:
            return await asyncio.wait_for(self._waiter, timeout)
        except TimeoutError:
            raise BenchError(f"no answer to {type(method).__name__} within {timeout:.0f} s") from None
        finally:
            self._waiter = None

    async def expect(self, *expect: type, timeout: float = 30.0) -> Any:
        self._waiter = asyncio.get_running_loop().create_future()
        self._expect = expect
        try:
            return await asyncio.wait_for(self._waiter, timeout)
        finally:
            self._waiter = None

    async def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            await self.call(spec.Connection.Close(reply_code=200, reply_text="bench done", class_id=0, method_id=0),
                            spec.Connection.CloseOk, channel=0, timeout=5)
        except BenchError:
            pass
        self.transport.close()


async def connect(url: str, timeout: float = 10.0, name: str = "warren-bench") -> BenchClient:
    """Open a connection and channel 1; BenchError with a one-line reason when that fails."""
    params = UrlParams.parse(url)
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if params.tls else None
    where = f"{params.host}:{params.port}"
    try:
        _transport, client = await asyncio.wait_for(
            loop.create_connection(BenchClient, params.host, params.port, ssl=context), timeout)
    except TimeoutError:
        raise BenchError(f"cannot connect to {where}: no answer within {timeout:.0f} s") from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise BenchError(f"cannot connect to {where}: {reason}; is the broker running, is --url right?") from None
    try:
        client.write(PROTOCOL_HEADER)
        await client.expect(spec.Connection.Start, timeout=timeout)
        client.send(spec.Connection.StartOk(
            client_properties={
                "product": name,
                "capabilities": {"publisher_confirms": True, "consumer_cancel_notify": True,
                                 "basic.nack": True, "connection.blocked": True},
            },
            mechanism="PLAIN", response=f"\0{params.user}\0{params.password}", locale="en_US",
        ), 0)
        tune = await client.expect(spec.Connection.Tune, timeout=timeout)
        frame_max = min(tune.frame_max or CLIENT_FRAME_MAX, CLIENT_FRAME_MAX)
        client.frame_max = frame_max
        client.send(spec.Connection.TuneOk(channel_max=tune.channel_max or 2047, frame_max=frame_max,
                                           heartbeat=0), 0)
        await client.call(spec.Connection.Open(virtual_host=params.vhost), spec.Connection.OpenOk,
                          channel=0, timeout=timeout)
        await client.call(spec.Channel.Open(), spec.Channel.OpenOk, timeout=timeout)
    except BenchError as exc:
        if client.transport is not None:
            client.transport.close()
        raise BenchError(f"{where}: {exc} (check the user, password and vhost in --url)") from None
    except TimeoutError:
        if client.transport is not None:
            client.transport.close()
        raise BenchError(f"{where} does not answer the AMQP handshake; is it an AMQP 0-9-1 broker?") from None
    return client


def queue_arguments(queue_type: str) -> dict[str, Any]:
    return {"x-queue-type": queue_type} if queue_type != "classic" else {}


async def declare_queue(url: str, name: str, queue_type: str, timeout: float) -> None:
    client = await connect(url, timeout)
    try:
        await client.call(spec.Queue.Declare(queue=name, durable=True, arguments=queue_arguments(queue_type)),
                          spec.Queue.DeclareOk)
        await client.call(spec.Queue.Purge(queue=name), spec.Queue.PurgeOk)
    finally:
        await client.close()


async def delete_queue(url: str, name: str, timeout: float) -> None:
    client = await connect(url, timeout)
    try:
        await client.call(spec.Queue.Delete(queue=name), spec.Queue.DeleteOk)
    finally:
        await client.close()


# ---- publisher ------------------------------------------------------------------------------


def publish_frames(prefix: bytes, chunk: int, body: bytes) -> bytes:
    """One publish's frames: ``prefix`` (``content_prefix``), then ``body`` in frames of ``chunk``."""
    if len(body) <= chunk:
        return b"".join((prefix, _FRAME_HEAD.pack(3, 1, len(body)), body, b"\xce"))
    parts = [prefix]
    for offset in range(0, len(body), chunk):
        piece = body[offset:offset + chunk]
        parts += (_FRAME_HEAD.pack(3, 1, len(piece)), piece, b"\xce")
    return b"".join(parts)


def ack_frame(delivery_tag: int) -> bytes:
    """basic.ack of one delivery on channel 1."""
    return _ACK_FRAME.pack(1, 1, 13, 60, 80, delivery_tag, 0, 0xCE)


def content_prefix(queue: str, size: int, persistent: bool, frame_max: int) -> tuple[bytes, int]:
    """basic.publish to the default exchange + the content header, up to the first body frame head."""
    method = pamqp_frame.marshal(spec.Basic.Publish(exchange="", routing_key=queue), 1)
    props = spec.Basic.Properties(delivery_mode=2 if persistent else 1)
    header = pamqp_frame.marshal(pamqp_header.ContentHeader(0, size, props), 1)
    return method + header, frame_max - 8


class Publisher:
    def __init__(self, client: BenchClient, config: BenchConfig, queue: str, quota: int | None,
                 deadline: float | None, counters: Any, slot: int) -> None:
        self.client = client
        self.window = config.confirm_window
        self.prefix, self.chunk = content_prefix(queue, config.size, config.persistent, client.frame_max)
        self.padding = b"\x00" * (config.size - STAMP_BYTES)
        self.quota = quota
        self.deadline = deadline
        self.counters = counters
        self.slot = slot
        self.published = 0
        self.confirmed = 0
        self.nacked = 0
        self.low = 1  # lowest unconfirmed tag
        self.ahead: set[int] = set()  # tags confirmed out of order above ``low``
        self.finished = False
        self.last_confirm = 0.0
        self.progress = asyncio.Event()
        client.on_confirm = self._on_confirm

    def _more(self) -> bool:
        if self.quota is not None:
            return self.published < self.quota
        assert self.deadline is not None
        return time.monotonic() < self.deadline

    def _message(self, seq: int) -> bytes:
        return publish_frames(self.prefix, self.chunk, _STAMP.pack(time.monotonic_ns(), seq) + self.padding)

    def fill(self, limit: int) -> None:
        """Publish up to ``limit`` messages (the free part of the confirm window) in one write."""
        out = []
        for _ in range(limit):
            if not self._more():
                self.finished = True
                break
            self.published += 1
            out.append(self._message(self.published))
        if out:
            self.client.write(b"".join(out))
            self.counters[self.slot] = self.published

    def outstanding(self) -> int:
        return self.published + 1 - self.low - len(self.ahead)

    def _on_confirm(self, tag: int, multiple: bool, nack: bool) -> None:
        done = 0
        if multiple:
            if tag >= self.low:
                done = tag + 1 - self.low - sum(1 for t in self.ahead if t <= tag)
                self.ahead = {t for t in self.ahead if t > tag}
                self.low = tag + 1
        elif tag == self.low:
            done = 1
            self.low += 1
            while self.low in self.ahead:
                self.ahead.discard(self.low)
                self.low += 1
                done += 1
        elif tag > self.low and tag not in self.ahead:
            self.ahead.add(tag)
            done = 1
        if nack:
            self.nacked += done
        else:
            self.confirmed += done
        self.last_confirm = time.monotonic()
        if not self.finished:
            free = self.window - self.outstanding()
            if free > 0:
                self.fill(free)
        self.progress.set()

    async def run(self) -> None:
        client = self.client
        if self.window:
            await client.call(spec.Confirm.Select(), spec.Confirm.SelectOk)
            self.fill(self.window)
            while not self.finished or self.outstanding() > 0:
                if client.error is not None:
                    raise BenchError(client.error)
                self.progress.clear()
                try:
                    await asyncio.wait_for(self.progress.wait(), 1.0)
                except TimeoutError:
                    # a time-bounded run may end while the window is full: recheck the deadline
                    if not self.finished and not self._more():
                        self.finished = True
        else:
            while not self.finished:
                if client.error is not None:
                    raise BenchError(client.error)
                self.fill(100)
                await client.writable.wait()
                await asyncio.sleep(0)
            self.last_confirm = time.monotonic()


# ---- consumer -------------------------------------------------------------------------------


class Consumer:
    def __init__(self, client: BenchClient, counters: Any, slot: int) -> None:
        self.client = client
        self.counters = counters
        self.slot = slot
        self.delivered = 0
        self.redelivered = 0
        self.latencies = array("q")
        self.last_delivery = 0.0
        self._acks: list[bytes] = []
        client.on_delivery = self._on_delivery
        client.on_chunk_done = self._flush_acks

    def _on_delivery(self, tag: int, redelivered: bool, stamp: int) -> None:
        now = time.monotonic_ns()
        self.delivered += 1
        if redelivered:
            self.redelivered += 1
        if stamp:
            self.latencies.append(now - stamp)
        self._acks.append(ack_frame(tag))

    def _flush_acks(self) -> None:
        if self._acks:
            self.client.write(b"".join(self._acks))
            self._acks.clear()
            self.last_delivery = time.monotonic()
            self.counters[self.slot] = self.delivered


# ---- worker processes ---------------------------------------------------------------------


def _fast_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def publisher_process(config: BenchConfig, queue: str, index: int, quota: int | None, counters: Any,
                      ready: Any, start: Any, results: Any) -> None:
    _fast_loop()

    async def main() -> dict[str, Any]:
        client = await connect(config.url, config.connect_timeout, f"warren-bench publisher {index}")
        try:
            ready.release()
            while not start.wait(0.05):
                await asyncio.sleep(0)
            started = time.monotonic()
            deadline = started + config.duration if quota is None and config.duration is not None else None
            publisher = Publisher(client, config, queue, quota, deadline, counters, index)
            await publisher.run()
            counters[index] = publisher.published
            return {"role": "publisher", "index": index, "published": publisher.published,
                    "confirmed": publisher.confirmed if config.confirm_window else publisher.published,
                    "nacked": publisher.nacked, "started": started, "ended": publisher.last_confirm}
        finally:
            await client.close()

    _run_worker(main, "publisher", index, ready, results)


def consumer_process(config: BenchConfig, queue: str, index: int, counters: Any, ready: Any,
                     stop: Any, results: Any) -> None:
    _fast_loop()

    async def main() -> dict[str, Any]:
        client = await connect(config.url, config.connect_timeout, f"warren-bench consumer {index}")
        consumer = Consumer(client, counters, index)
        try:
            await client.call(spec.Basic.Qos(prefetch_count=config.prefetch), spec.Basic.QosOk)
            await client.call(spec.Basic.Consume(queue=queue, consumer_tag=f"bench-{index}"), spec.Basic.ConsumeOk)
            ready.release()
            loop = asyncio.get_running_loop()
            while not await loop.run_in_executor(None, stop.wait, 0.2):
                if client.error is not None:
                    raise BenchError(client.error)
            return {"role": "consumer", "index": index, "delivered": consumer.delivered,
                    "redelivered": consumer.redelivered, "ended": consumer.last_delivery,
                    "latencies": consumer.latencies.tobytes()}
        finally:
            await client.close()

    _run_worker(main, "consumer", index, ready, results)


def _run_worker(main: Any, role: str, index: int, ready: Any, results: Any) -> None:
    try:
        results.put(asyncio.run(main()))
    except BenchError as exc:
        results.put({"role": role, "index": index, "error": str(exc)})
        ready.release()
    except KeyboardInterrupt:
        results.put({"role": role, "index": index, "error": "interrupted"})


# ---- the run --------------------------------------------------------------------------------


def percentile(sorted_values: list[int], fraction: float) -> int:
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(samples: array[int]) -> dict[str, float]:
    values = sorted(samples)
    if not values:
        return {}
    ms = 1e-6
    return {
        "min": round(values[0] * ms, 3),
        "p50": round(percentile(values, 0.50) * ms, 3),
        "p95": round(percentile(values, 0.95) * ms, 3),
        "p99": round(percentile(values, 0.99) * ms, 3),
        "max": round(values[-1] * ms, 3),
        "mean": round(sum(values) / len(values) * ms, 3),
    }


class Progress:
    """What the parent shows while the run goes (implemented with rich by the CLI)."""

    def update(self, published: int, delivered: int, phase: str) -> None:  # pragma: no cover - interface
        pass


def run(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run the benchmark; raises BenchError when the broker cannot be reached or refuses the setup."""
    if config.size < STAMP_BYTES:
        raise BenchError(f"--size must be at least {STAMP_BYTES} bytes (the timestamp and sequence number)")
    if config.publishers < 1 or config.consumers < 0:
        raise BenchError("--publishers must be at least 1 and --consumers at least 0")
    if config.messages is None and config.duration is None:
        raise BenchError("give --duration or --messages")
    queue = config.queue or f"warren-bench-{os.getpid()}-{int(time.time())}"
    asyncio.run(declare_queue(config.url, queue, config.queue_type, config.connect_timeout))
    result = BenchResult(broker=redact(config.url), queue=queue, queue_type=config.queue_type,
                         publishers=config.publishers, consumers=config.consumers, size=config.size,
                         confirm_window=config.confirm_window, prefetch=config.prefetch,
                         persistent=config.persistent)
    try:
        _run_processes(config, queue, result, progress or Progress())
    finally:
        if config.queue is None:
            try:
                asyncio.run(delete_queue(config.url, queue, config.connect_timeout))
            except BenchError as exc:
                result.errors.append(f"cannot delete the queue {queue}: {exc}")
    return result


def _run_processes(config: BenchConfig, queue: str, result: BenchResult, progress: Progress) -> None:
    ctx = mp.get_context("spawn")
    published = ctx.RawArray("q", config.publishers)
    delivered = ctx.RawArray("q", max(1, config.consumers))
    ready = ctx.Semaphore(0)
    start = ctx.Event()
    stop = ctx.Event()
    results = ctx.Queue()
    quotas: list[int | None] = [None] * config.publishers
    if config.messages is not None:
        share, extra = divmod(config.messages, config.publishers)
        quotas = [share + (1 if i < extra else 0) for i in range(config.publishers)]
    consumers = [ctx.Process(target=consumer_process, args=(config, queue, i, delivered, ready, stop, results),
                             daemon=True) for i in range(config.consumers)]
    publishers = [ctx.Process(target=publisher_process, args=(config, queue, i, quotas[i], published, ready, start,
                                                              results), daemon=True)
                  for i in range(config.publishers)]
    workers = consumers + publishers
    for process in workers:
        process.start()
    gathered: list[dict[str, Any]] = []
    try:
        for _ in workers:
            if not ready.acquire(timeout=config.connect_timeout + 30):
                raise BenchError("the workers did not connect in time")
        while not results.empty():  # a worker that failed to connect has reported already
            gathered.append(results.get())
        failed = [g["error"] for g in gathered if "error" in g]
        if failed:
            raise BenchError(failed[0])
        started = time.monotonic()
        start.set()
        # publishing phase
        publisher_results: list[dict[str, Any]] = []
        while len(publisher_results) < config.publishers:
            progress.update(sum(published), sum(delivered), "publishing")
            try:
                item = results.get(timeout=0.2)
            except Exception:  # noqa: BLE001 - queue.Empty
                continue
            if "error" in item:
                raise BenchError(f"{item['role']} {item['index']}: {item['error']}")
            publisher_results.append(item)
        target = sum(p["confirmed"] for p in publisher_results)
        # draining phase: until the consumers have every confirmed message
        last_count, last_change = -1, time.monotonic()
        while config.consumers and time.monotonic() - last_change < config.drain_timeout:
            count = sum(delivered)
            progress.update(sum(published), count, "draining")
            if count >= target:
                break
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            time.sleep(0.05)
        stop.set()
        consumer_results: list[dict[str, Any]] = []
        while len(consumer_results) < config.consumers:
            item = results.get(timeout=30)
            if "error" in item:
                raise BenchError(f"{item['role']} {item['index']}: {item['error']}")
            consumer_results.append(item)
        progress.update(sum(published), sum(delivered), "done")
    finally:
        start.set()
        stop.set()
        for process in workers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    result.published = sum(p["published"] for p in publisher_results)
    result.confirmed = sum(p["confirmed"] for p in publisher_results)
    result.nacked = sum(p["nacked"] for p in publisher_results)
    result.publish_seconds = round(max(p["ended"] for p in publisher_results) - started, 3)
    result.publish_rate = round(result.confirmed / result.publish_seconds, 1) if result.publish_seconds > 0 else 0.0
    latencies: array[int] = array("q")
    for c in consumer_results:
        latencies.frombytes(c["latencies"])
    result.delivered = sum(c["delivered"] for c in consumer_results)
    result.redelivered = sum(c["redelivered"] for c in consumer_results)
    if consumer_results:
        ended = max(c["ended"] for c in consumer_results)
        result.deliver_seconds = round(max(0.0, ended - started), 3)
        result.deliver_rate = round(result.delivered / result.deliver_seconds, 1) if result.deliver_seconds > 0 else 0.0
    result.latency_ms = latency_summary(latencies)
    if config.consumers and result.delivered < result.confirmed:
        result.errors.append(f"{result.confirmed - result.delivered} confirmed messages were not delivered "
                             f"within {config.drain_timeout:.0f} s")
