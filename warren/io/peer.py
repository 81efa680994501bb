"""TCP transport between cluster nodes: authenticated, framed, batched, self-reconnecting.

Wire format: every frame is a 4-byte big-endian length followed by that many bytes of
msgpack. Nothing else is ever decoded from a peer (no pickle).

Each node dials every peer for its *outgoing* messages and accepts the peers' dials for
*incoming* ones, so there is never a race over which of two connections to keep.

Handshake (mutual proof of the shared secret; the secret itself never crosses the wire):

1. dialer  -> listener  ``{"hello": 1, "from": D, "to": L, "nonce": nD}``
2. listener -> dialer   ``{"nonce": nL, "mac": HMAC(secret, "listener" | nD | nL | L | D)}``
3. dialer  -> listener  ``{"mac": HMAC(secret, "dialer" | nL | nD | D | L)}``

Both nonces are fresh random 32 bytes, so a recorded handshake cannot be replayed, and the
role label in each MAC stops a reflection of one side's proof as the other's. Until the
handshake completes a peer may send only small frames, so an unauthenticated connection
cannot make the node allocate ``peer_max_message_bytes``.

A dialer whose check of the listener's proof fails says so (``{"refused": ...}``) before
it hangs up, so both sides log the mismatch (the listener would otherwise only see a closed
connection).

REQUESTS: a dialer that says it is node ``REQUEST_PEER`` (0), to node 0 or to the listener's
id, and proves the secret like any peer, may send ONE request frame and gets ONE reply frame
(``on_request``), then the connection closes (:func:`peer_request`). A node joining the
cluster has no id yet; a follower forwards a proposal to its leader this way.

Optional TLS (:class:`PeerTLS`, from :func:`peer_tls`): mutual -- each side presents a
certificate signed by the cluster's CA and verifies the other's, the dialer also checks that
the listener's certificate names the host it dialed -- with the shared-secret handshake still
run inside it (a stolen certificate alone does not make a member, nor the secret alone).

Outgoing messages are queued per peer and written once per event-loop iteration (all
messages queued during one iteration leave in one ``write``). While a peer is unreachable
its queue is bounded and the oldest messages are dropped: Raft retransmits what matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from warren.errors import ConfigError, PeerProtocolError
from warren.limits import Limits

log = logging.getLogger("warren.peer")

_LENGTH = struct.Struct(">I")
HANDSHAKE_MAX_FRAME_BYTES = 512
NONCE_BYTES = 32

REQUEST_PEER = 0  # the id a dialer gives for a one-request connection (see REQUESTS above)
RequestHandler = Callable[[Any], Awaitable[Any]]
"""Answers one request frame (a msgpack object) with one reply frame."""

MessageHandler = Callable[[int, Any], None]
"""Called with (peer id, decoded msgpack object) for every message a peer sends. Raising
:class:`PeerProtocolError` from it drops that peer's connection (its message was invalid)."""


@dataclass(frozen=True)
class PeerTLS:
    server: ssl.SSLContext  # for accepted connections: requires a client certificate
    client: ssl.SSLContext  # for dialed ones: verifies the listener and its host name


def peer_tls(certfile: str, keyfile: str, cafile: str) -> PeerTLS:
    """Contexts for the cluster port from PEM files; ``ConfigError`` names what is wrong."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        for context in (server, client):
            context.load_cert_chain(certfile, keyfile)
            context.load_verify_locations(cafile)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the cluster TLS files: {exc}; check the certificate, key and CA paths"
        ) from exc
    server.verify_mode = ssl.CERT_REQUIRED
    return PeerTLS(server, client)


class UnknownPeer(PeerProtocolError):
    """A peer authenticated as a node id this node does not know (not a member yet)."""


# --- sans-I/O pieces -------------------------------------------------------------------


def encode_frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into msgpack objects; raises PeerProtocolError on bad input."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes, at_most: int | None = None) -> list[Any]:
        """The frames complete so far, ``at_most`` of them: the rest stays undecoded, so a
        frame that followed the handshake in the same read is checked against the limit in
        force once the handshake is done, not against the handshake's."""
        # Frames are decoded straight out of the bytes read (no copy into the buffer, no copy
        # of each body); only an incomplete tail waits in the buffer for the next read.
        buffered = bool(self._buffer)
        if buffered:
            self._buffer += data
        buf: bytes | bytearray = self._buffer if buffered else data
        out: list[Any] = []
        pos = 0
        end_of_data = len(buf)
        with memoryview(buf) as view:
            while end_of_data - pos >= 4 and (at_most is None or len(out) < at_most):
                (size,) = _LENGTH.unpack_from(buf, pos)
                if size > self.max_frame_bytes:
                    raise PeerProtocolError(
                        f"frame of {size} bytes exceeds the limit of {self.max_frame_bytes}"
                    )
                end = pos + 4 + size
                if end > end_of_data:
                    break
                try:
                    out.append(msgpack.unpackb(view[pos + 4 : end], raw=False, strict_map_key=False))
                except (
                    ValueError,
                    msgpack.ExtraData,
                    msgpack.FormatError,
                    msgpack.StackError,
                ) as exc:
                    raise PeerProtocolError(f"undecodable frame: {exc}") from exc
                pos = end
        if buffered:
            if pos:
                del self._buffer[:pos]
        elif pos < end_of_data:
            self._buffer += buf[pos:]
        return out


def handshake_mac(
    secret: bytes, role: str, nonce_a: bytes, nonce_b: bytes, id_a: int, id_b: int
) -> bytes:
    """The proof that the side playing ``role`` knows ``secret`` for this exchange."""
    message = b"|".join([role.encode(), nonce_a, nonce_b, str(id_a).encode(), str(id_b).encode()])
    return hmac.new(secret, message, hashlib.sha256).digest()


@dataclass
class Backoff:
    """Exponential reconnect delay with jitter: uniform in [d/2, d], d doubling up to a cap."""

    minimum: float
    maximum: float
    rng: random.Random
    attempts: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.minimum * (2**self.attempts))
        self.attempts += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempts = 0


def _field(obj: Any, name: str, kind: type) -> Any:
    if not isinstance(obj, dict) or not isinstance(obj.get(name), kind):
        raise PeerProtocolError(f"handshake message lacks {name!r}")
    return obj[name]


# --- asyncio transport ----------------------------------------------------------------


class _FrameStream:
    """Reads decoded frames from a StreamReader, buffering any that arrived together."""

    def __init__(self, reader: asyncio.StreamReader, max_frame_bytes: int) -> None:
        self.reader = reader
        self.decoder = FrameDecoder(max_frame_bytes)
        self.pending: deque[Any] = deque()

    async def next(self) -> Any:
        """One frame; what came after it stays undecoded until asked for (see ``feed``)."""
        self.pending.extend(self.decoder.feed(b"", at_most=1))
        while not self.pending:
            data = await self.reader.read(256 * 1024)
            if not data:
                raise ConnectionError("peer closed the connection")
            self.pending.extend(self.decoder.feed(data, at_most=1))
        return self.pending.popleft()

    async def batches(self) -> Any:
        """Yields lists of frames, as many as one read delivered."""
        self.pending.extend(self.decoder.feed(b""))  # what arrived with the handshake's last frame
        if self.pending:
            batch = list(self.pending)
            self.pending.clear()
            yield batch
        while True:
            data = await self.reader.read(256 * 1024)
            if not data:
                return
            frames = self.decoder.feed(data)
            if frames:
                yield frames


class _Outbound:
    """The dialing side towards one peer: a queue, a connection task and a writer."""

    def __init__(self, transport: PeerTransport, peer_id: int, address: tuple[str, int]) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.address = address
        self.queue: deque[bytes] = deque()
        self.writer: asyncio.StreamWriter | None = None
        self.flush_scheduled = False
        self.dropped = 0
        self.backoff = Backoff(
            transport.limits.peer_reconnect_min_seconds,
            transport.limits.peer_reconnect_max_seconds,
            transport.rng,
        )
        self.task: asyncio.Task[None] | None = None
        self.last_warning = ""

    def enqueue(self, frame: bytes) -> None:
        if len(self.queue) >= self.transport.limits.peer_max_queued_messages:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(frame)
        if self.writer is not None and not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        writer = self.writer
        if writer is None or not self.queue or writer.is_closing():
            return  # (a connection going down: the frames wait for the next one)
        if (
            writer.transport.get_write_buffer_size()
            > self.transport.limits.peer_max_write_buffer_bytes
        ):
            # The peer is not reading; drop rather than grow without bound.
            self.dropped += len(self.queue)
            self.queue.clear()
            return
        data = b"".join(self.queue)
        self.queue.clear()
        writer.write(data)

    async def run(self) -> None:
        # The flag, not only cancel(), ends the loop: a cancel racing a finishing
        # handshake can be absorbed on the way out.
        while not self.transport._stopping:
            try:
                await self._connect_and_serve()
            except asyncio.CancelledError:
                raise
            except PeerProtocolError as exc:
                self._warn_once(f"peer {self.peer_id} at {self.address[0]}:{self.address[1]} refused: {exc}")
            except ssl.SSLError as exc:
                self._warn_once(f"TLS with peer {self.peer_id} at {self.address[0]}:{self.address[1]} "
                                f"failed: {exc.reason or exc}")
            except (OSError, ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
                log.debug("peer %s unreachable: %r", self.peer_id, exc)
            finally:
                self._drop_writer()
            await asyncio.sleep(self.backoff.next_delay())

    def _warn_once(self, text: str) -> None:
        """A failure repeated on every reconnect is logged when it starts or changes."""
        if text != self.last_warning:
            self.last_warning = text
            log.warning("%s", text)

    def _drop_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.transport._changed()

    async def _connect_and_serve(self) -> None:
        t = self.transport
        async with asyncio.timeout(t.limits.peer_handshake_timeout_seconds):
            reader, writer = await open_peer_connection(self.address, t.tls)
        try:
            async with asyncio.timeout(t.limits.peer_handshake_timeout_seconds):
                await self._handshake(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            writer.close()
            if t.tls is None:
                raise
            # With TLS 1.3 the listener checks our certificate after our side of the TLS
            # handshake is done: its refusal arrives as a closed connection.
            raise PeerProtocolError(
                "closed the connection during the handshake; does it trust this node's "
                "certificate (signed by the cluster CA)?"
            ) from exc
        except BaseException:
            writer.close()
            raise
        self.writer = writer
        self.backoff.reset()
        self.last_warning = ""
        log.info("connected to peer %s at %s:%s", self.peer_id, *self.address)
        t._changed()
        self.flush()
        # Nothing is expected back on this connection; reading detects its loss.
        while await reader.read(4096):
            pass
        raise ConnectionError("peer closed the connection")

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t = self.transport
        await dial_handshake(reader, writer, t.secret, t.node_id, self.peer_id)


TLS_GO = b"T"
"""With TLS, the listener sends this one plaintext byte and switches its side to TLS in the
same step (no await between): the dialer starts its handshake only after reading it. Were
the dialer to speak first, its ClientHello could land in the plaintext reader's buffer
before the listener's ``start_tls`` and the handshake would hang (seen under load)."""


async def open_peer_connection(address: tuple[str, int], tls: PeerTLS | None) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*address)
    if tls is None:
        return reader, writer
    try:
        if await reader.readexactly(1) != TLS_GO:
            raise PeerProtocolError("the listener does not speak the cluster's TLS; is TLS on at both ends?")
        await writer.start_tls(tls.client, server_hostname=address[0])
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def dial_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         secret: bytes, my_id: int, peer_id: int) -> _FrameStream:
    """The dialer's side of the handshake; the stream reads what follows it."""
    my_nonce = secrets.token_bytes(NONCE_BYTES)
    writer.write(encode_frame({"hello": 1, "from": my_id, "to": peer_id, "nonce": my_nonce}))
    stream = _FrameStream(reader, HANDSHAKE_MAX_FRAME_BYTES)
    first = await reader.read(256 * 1024)
    if first[:1] == TLS_GO:  # a handshake frame starts with a zero byte (its small length)
        raise PeerProtocolError(
            "the node at the other end runs the cluster port with TLS: give this node "
            "--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca too")
    if not first:
        raise ConnectionError("peer closed the connection")
    stream.pending.extend(stream.decoder.feed(first, at_most=1))
    reply = await stream.next()
    their_nonce = _field(reply, "nonce", bytes)
    expected = handshake_mac(secret, "listener", my_nonce, their_nonce, peer_id, my_id)
    if not hmac.compare_digest(_field(reply, "mac", bytes), expected):
        # Say so before hanging up: the listener logs the mismatch too.
        writer.write(encode_frame({"refused": "your shared-secret proof is wrong"}))
        with contextlib.suppress(OSError, ConnectionError):
            await writer.drain()
        raise PeerProtocolError(
            "peer failed the shared-secret handshake: its cluster secret differs from this "
            "node's (--cluster-secret / WARREN_CLUSTER_SECRET)"
        )
    proof = handshake_mac(secret, "dialer", their_nonce, my_nonce, my_id, peer_id)
    writer.write(encode_frame({"mac": proof}))
    await writer.drain()
    return stream


async def peer_request(address: tuple[str, int], secret: bytes, request: Any, limits: Limits,
                       tls: PeerTLS | None = None, timeout: float | None = None) -> Any:
    """Send one request to the node listening at ``address`` (see REQUESTS in the module
    docstring) and return its reply. Raises ``OSError``/``TimeoutError`` when it cannot be
    reached, :class:`PeerProtocolError` when the handshake fails (a wrong secret)."""
    async with asyncio.timeout(timeout or limits.cluster_request_timeout_seconds):
        reader, writer = await open_peer_connection(address, tls)
        try:
            stream = await dial_handshake(reader, writer, secret, REQUEST_PEER, REQUEST_PEER)
            stream.decoder.max_frame_bytes = limits.peer_max_message_bytes
            writer.write(encode_frame(request))
            try:
                return await stream.next()
            except ConnectionError as exc:
                raise ConnectionError("the node closed the connection without answering") from exc
        finally:
            writer.close()


class PeerTransport:
    """Sends msgpack-able messages to peers by id and delivers theirs to ``on_message``."""

    def __init__(
        self,
        node_id: int,
        listen: tuple[str, int],
        peers: dict[int, tuple[str, int]],
        secret: bytes,
        on_message: MessageHandler,
        limits: Limits,
        rng: random.Random,
        tls: PeerTLS | None = None,
        on_request: RequestHandler | None = None,
    ) -> None:
        """``node_id`` may be 0 until the node knows its id (a joiner): then only requests
        are accepted; set ``node_id`` before ``start_dialing``."""
        assert secret, "the cluster secret must not be empty"
        self.tls = tls
        self.on_request = on_request
        self.node_id = node_id
        self.listen = listen
        self.secret = secret
        self.on_message = on_message
        self.limits = limits
        self.rng = rng
        self._outbound = {
            pid: _Outbound(self, pid, addr) for pid, addr in peers.items() if pid != node_id
        }
        self._inbound: dict[int, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._accepted: set[asyncio.StreamWriter] = set()
        self._stopping = False
        self._change = asyncio.Event()
        self.refused_connections = 0
        self._tls_refusals: dict[str, str] = {}  # remote host -> the last TLS refusal logged
        self.oversize_dropped = 0
        self.unknown_peer_dropped = 0
        self._dialing = False
        self._packer = msgpack.Packer(use_bin_type=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen, then start dialing every peer."""
        await self.start_listening()
        self.start_dialing()

    async def start_listening(self) -> None:
        # TLS starts inside _accept, not here: asyncio drops a failed server-side handshake
        # without a word, and a peer refused for its certificate deserves a log line.
        self._server = await asyncio.start_server(self._accept, *self.listen)

    def start_dialing(self) -> None:
        assert self.node_id != REQUEST_PEER, "dialing peers needs this node's id"
        self._dialing = True
        for out in self._outbound.values():
            if out.task is None:
                out.task = asyncio.get_running_loop().create_task(out.run())

    def peer_ids(self) -> set[int]:
        return set(self._outbound)

    def add_peer(self, peer_id: int, address: tuple[str, int]) -> None:
        """Start talking to ``peer_id`` (a new member), or update its address."""
        if peer_id == self.node_id:
            return
        out = self._outbound.get(peer_id)
        if out is not None:
            out.address = address
            return
        out = self._outbound[peer_id] = _Outbound(self, peer_id, address)
        if self._dialing and not self._stopping:
            out.task = asyncio.get_running_loop().create_task(out.run())

    def remove_peer(self, peer_id: int) -> None:
        """Stop talking to ``peer_id`` (it left): its queue is dropped, its dial stops, and
        its connections to this node are refused from the next one on."""
        out = self._outbound.pop(peer_id, None)
        if out is not None:
            if out.task is not None:
                out.task.cancel()
            out._drop_writer()
        inbound = self._inbound.pop(peer_id, None)
        if inbound is not None:
            inbound.close()

    async def stop(self) -> None:
        """Close the listener and every connection; queued messages are dropped."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        tasks = [o.task for o in self._outbound.values() if o.task] + list(self._handlers)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in list(self._accepted):
            writer.transport.abort()  # a peer that stopped reading cannot hold up shutdown
        for out in self._outbound.values():
            out.task = None
            out._drop_writer()
        if self._server is not None:
            await asyncio.wait_for(
                self._server.wait_closed(), self.limits.peer_handshake_timeout_seconds
            )
            self._server = None

    def set_peer_address(self, peer_id: int, address: tuple[str, int]) -> None:
        """Where to dial ``peer_id`` from the next (re)connection on."""
        self._outbound[peer_id].address = address

    def send(self, peer_id: int, message: Any) -> None:
        """Queue ``message`` for ``peer_id``; written with everything else queued this turn.

        A message over ``peer_max_message_bytes`` is dropped here (and counted): the peer
        would drop the connection for it, and with it whatever was queued behind it."""
        body = self._packer.pack(message)  # one Packer for the loop's thread: no setup per call
        if len(body) > self.limits.peer_max_message_bytes:
            self.oversize_dropped += 1
            log.error(
                "not sending a %d-byte message to peer %s: over peer_max_message_bytes (%d)",
                len(body),
                peer_id,
                self.limits.peer_max_message_bytes,
            )
            return
        out = self._outbound.get(peer_id)
        if out is None:  # not (or no longer) a peer: a member that just left
            self.unknown_peer_dropped += 1
            return
        out.enqueue(_LENGTH.pack(len(body)) + body)

    def connected_to(self) -> set[int]:
        """Peers this node can currently send to."""
        return {pid for pid, out in self._outbound.items() if out.writer is not None}

    def connected_from(self) -> set[int]:
        """Peers currently authenticated and sending to this node."""
        return set(self._inbound)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; re-checked whenever a connection changes."""
        while not predicate():
            self._change.clear()
            await self._change.wait()

    def _changed(self) -> None:
        self._change.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._accepted.add(writer)
        peer_id: int | None = None
        remote = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(self.limits.peer_handshake_timeout_seconds):
                if self.tls is not None:
                    writer.write(TLS_GO)
                    try:
                        await writer.start_tls(self.tls.server)
                    except (ConnectionError, asyncio.IncompleteReadError) as exc:
                        raise ssl.SSLError(
                            "the peer hung up before TLS; does it run the cluster port without "
                            "TLS?") from exc
                stream = _FrameStream(reader, HANDSHAKE_MAX_FRAME_BYTES)
                peer_id = await self._accept_handshake(stream, writer)
            if peer_id == REQUEST_PEER:
                await self._serve_request(stream, writer)
                return
            old = self._inbound.pop(peer_id, None)
            if old is not None:
                old.close()
            self._inbound[peer_id] = writer
            self._changed()
            stream.decoder.max_frame_bytes = self.limits.peer_max_message_bytes
            async for frames in stream.batches():
                for frame in frames:
                    self.on_message(peer_id, frame)
        except PeerProtocolError as exc:
            self.refused_connections += 1
            # A member this node has not heard of yet is the normal race of a join: no warning.
            level = logging.INFO if isinstance(exc, UnknownPeer) else logging.WARNING
            log.log(level, "dropping peer connection from %s: %s", remote, exc)
        except TimeoutError:
            self.refused_connections += 1
            log.warning("dropping peer connection from %s: handshake timed out", remote)
        except ssl.SSLError as exc:
            self.refused_connections += 1
            # once per cause and address: a refused peer retries every few seconds
            text = f"refused a peer connection from {remote[0]}: TLS failed: {exc.reason or exc}"
            if self._tls_refusals.get(remote[0]) != text:
                self._tls_refusals[remote[0]] = text
                log.warning("%s", text)
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): the connection closes below
        finally:
            if peer_id and self._inbound.get(peer_id) is writer:
                del self._inbound[peer_id]
                self._changed()
            writer.close()
            self._handlers.discard(task)
            self._accepted.discard(writer)

    async def _accept_handshake(self, stream: _FrameStream, writer: asyncio.StreamWriter) -> int:
        hello = await stream.next()
        peer_id = _field(hello, "from", int)
        their_nonce = _field(hello, "nonce", bytes)
        to = _field(hello, "to", int)
        request = peer_id == REQUEST_PEER
        if to != self.node_id and not (request and to == REQUEST_PEER):
            raise PeerProtocolError(
                f"peer {peer_id} dialed node {hello['to']}, this is {self.node_id}"
            )
        if request and self.on_request is None:
            raise PeerProtocolError("this node serves no requests")
        if not request and peer_id not in self._outbound:
            raise UnknownPeer(f"node {peer_id} is not a configured peer (not a member "
                              "this node knows of yet)")
        my_nonce = secrets.token_bytes(NONCE_BYTES)
        proof = handshake_mac(self.secret, "listener", their_nonce, my_nonce, to, peer_id)
        writer.write(encode_frame({"nonce": my_nonce, "mac": proof}))
        reply = await stream.next()
        who = "a joining node or request" if request else f"node {peer_id}"
        if isinstance(reply, dict) and "refused" in reply:
            raise PeerProtocolError(
                f"{who} failed the shared-secret handshake: it refused this node's proof, so the "
                "two have different cluster secrets (--cluster-secret / WARREN_CLUSTER_SECRET)"
            )
        expected = handshake_mac(self.secret, "dialer", my_nonce, their_nonce, peer_id, to)
        if not hmac.compare_digest(_field(reply, "mac", bytes), expected):
            raise PeerProtocolError(f"{who} failed the shared-secret handshake")
        return peer_id

    async def _serve_request(self, stream: _FrameStream, writer: asyncio.StreamWriter) -> None:
        """One request, one reply (see REQUESTS in the module docstring)."""
        assert self.on_request is not None
        stream.decoder.max_frame_bytes = self.limits.peer_max_message_bytes
        async with asyncio.timeout(self.limits.cluster_request_timeout_seconds):
            request = await stream.next()
        reply = await self.on_request(request)
        writer.write(encode_frame(reply))
        with contextlib.suppress(OSError, ConnectionError):
            await writer.drain()
