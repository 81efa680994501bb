"""The server side of one AMQP 0-9-1 connection, as a sans-I/O state machine.

Bytes in, events out (:mod:`warren.amqp.events`); the driver owns the socket and the clock::

    conn = ServerConnection(limits, server_properties={"cluster_name": "rabbit@a"})
    conn.tick(now)                                # first tick starts the handshake timer
    events = conn.receive_data(data, now)         # never raises on client garbage
    sock.write(conn.data_to_send())               # everything queued, drained
    conn.pending_bytes()                          # outbound backlog, for back-pressure
    events = conn.tick(now)                       # heartbeats, timeouts; call ~every second

``now`` is monotonic seconds. ``receive_data(data, now=None)`` counts as activity at ``now``
(or at the last tick's time when omitted).

Answers to events::

    LoginRequested -> accept_login() | refuse_login(text)       # text sent verbatim (403)
    VhostRequested -> accept_vhost() | refuse_vhost(code, text)  # text sent verbatim

While a login or vhost decision is pending the connection parses nothing more; bytes the
client pipelined are parsed on the next ``receive_data`` (``receive_data(b"", now)`` is fine)
or ``tick``.

Sending: ``send_method(channel, pamqp_method)``, ``send_deliver(...)``, ``send_get_ok(...)``,
``send_return(...)`` (``properties`` is the encoded property block as received in the
publisher's content header), ``close_channel(channel, code, text, class_id, method_id)``,
``close(code, text, class_id, method_id)`` (texts verbatim, e.g. ``"NOT_FOUND - no queue 'q'"``),
``block(reason)`` / ``unblock()`` (sent only if the client announced the
``connection.blocked`` capability), ``set_receiving(enabled)`` (the driver stopped or resumed
reading the socket, as flow control does: silence while it is not read is not the client's,
so the heartbeat timeout waits, as RabbitMQ pauses its heartbeat monitor). Sends to a channel that is not open, or after the
connection started closing, are dropped: the client could not take them.

Events beyond the answers above: ChannelOpened, ChannelClosedByPeer (close-ok already
sent), ChannelCloseConfirmed, MethodReceived, PublishReceived (method, encoded properties,
body), ConnectionClosedByPeer then ConnectionTerminated, HeartbeatTimeout then
ConnectionTerminated, and for client protocol violations ConnectionProtocolError(code, text)
(connection.close queued, every channel gone) or ChannelProtocolError(channel, code, text)
(channel.close queued: release the channel now; ChannelCloseConfirmed follows). channel.flow
is passed up as a MethodReceived; the upper layer replies flow-ok.

State: ``is_open`` (after open-ok), ``closed`` (terminated; nothing more is read),
``username``, ``vhost``, ``mechanism``, ``client_properties``, ``capabilities``,
``heartbeat``, ``frame_max``, ``channel_max``, ``open_channels``, ``state_name``,
``has_published`` (a basic.publish method frame arrived: the client is a publisher from its
first method frame on, before any body) and ``buffered_bytes`` (client bytes held here:
partial bodies being assembled plus an incomplete frame; flow control counts them).

Errors follow RabbitMQ 3.x: reply codes and texts such as
``CHANNEL_ERROR - expected 'channel.open'``. Framing errors (bad frame end, frame larger
than frame-max, bad protocol header) close at once (ConnectionTerminated); other
connection errors send connection.close and terminate on the client's close-ok or after
``limits.close_ok_timeout_seconds``. Like RabbitMQ, a frame payload may exceed
frame_max - 8 by up to 8 bytes (clients are often off by 8). Where RabbitMQ differs from
the spec we follow the spec in two places: a heartbeat on a non-zero channel is 501
FRAME_ERROR (RabbitMQ: 505) and undecodable method arguments are 502 SYNTAX_ERROR
(RabbitMQ: 501 "cannot decode").

Hot paths (basic.publish + header + body, basic.ack) are parsed inline with ``struct``
straight from the socket's bytes; deliveries are encoded by :mod:`warren.amqp.codec`.
Rates: ``scripts/bench-amqp``.
"""

from __future__ import annotations

from typing import Any

from pamqp import commands

from warren.amqp import codec, handshake
from warren.amqp import events as ev
from warren.amqp.events import Event, MethodReceived, PublishReceived
from warren.amqp.properties import decode_properties, encode_properties
from warren.errors import AMQPError, ReplyCode
from warren.limits import FRAME_MIN_SIZE, Limits

__all__ = ["Event", "ServerConnection", "decode_properties", "encode_properties"]

# Connection states, in handshake order.
_AWAIT_HEADER = 0
_AWAIT_START_OK = 1
_AWAIT_LOGIN = 2  # LoginRequested is out; waiting for accept_login/refuse_login
_AWAIT_TUNE_OK = 3
_AWAIT_OPEN = 4
_AWAIT_VHOST = 5  # VhostRequested is out
_RUNNING = 6
_CLOSING = 7  # we sent connection.close; only close-ok (or close) matters now
_CLOSED = 8

_STATE_NAMES = {
    _AWAIT_HEADER: "starting",
    _AWAIT_START_OK: "starting",
    _AWAIT_LOGIN: "securing",
    _AWAIT_TUNE_OK: "tuning",
    _AWAIT_OPEN: "opening",
    _AWAIT_VHOST: "opening",
    _RUNNING: "running",
    _CLOSING: "closing",
    _CLOSED: "closed",
}

# Channel states
_CH_OPEN = 1
_CH_CLOSING = 2  # we sent channel.close; only close/close-ok matter on it

_CHANNEL_OPEN = commands.Channel.Open.index
_CHANNEL_CLOSE = commands.Channel.Close.index
_CHANNEL_CLOSE_OK = commands.Channel.CloseOk.index
_CONNECTION_CLOSE = commands.Connection.Close.index
_CONNECTION_CLOSE_OK = commands.Connection.CloseOk.index
_CONNECTION_CLASS = 10
_BASIC_PUBLISH = codec.PUBLISH_INDEX

_FRAME_HEAD = codec.FRAME_HEAD
_INDEX = codec.INDEX
_CONTENT_HEAD = codec.CONTENT_HEAD


class _Content:
    """A publish being assembled on one channel: method, then header, then body frames."""

    __slots__ = ("method", "properties", "body_size", "chunks", "received")

    def __init__(self, method: commands.Basic.Publish) -> None:
        self.method = method
        self.properties: bytes | None = None  # None until the header arrived
        self.body_size = 0
        self.chunks: list[bytes] = []
        self.received = 0


class _Fatal(Exception):
    """Internal: stop parsing this buffer (the connection terminated)."""


class ServerConnection:
    """One client connection's protocol state. See the module docstring for the API."""

    def __init__(self, limits: Limits, server_properties: dict[str, Any] | None = None) -> None:
        self.limits = limits
        self.server_properties = handshake.server_properties(server_properties)
        self.is_open = False
        self.closed = False
        self.username = ""
        self.vhost = ""
        self.mechanism = ""
        self.client_properties: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.heartbeat = 0
        self.frame_max = limits.frame_max
        self.channel_max = limits.channel_max or 65535
        self._state = _AWAIT_HEADER
        self._in = bytearray()
        self._out: list[bytes] = []
        self._out_size = 0
        self._channels: dict[int, int] = {}
        self._content: dict[int, _Content] = {}
        self._events: list[Event] = []
        self._blocked = False
        self.has_published = False
        self._receiving = True  # False while the driver does not read the socket
        self._checked_properties = b"\x00\x00"  # the last property block known well-formed
        # Before tune-ok, accept frames up to the server's own frame-max.
        self._max_payload = self._payload_limit(limits.frame_max)
        self._now = 0.0
        self._started: float | None = None
        self._last_received = 0.0
        self._last_sent = 0.0
        self._close_deadline = 0.0

    # ---- driver API ------------------------------------------------------------------

    @property
    def open_channels(self) -> set[int]:
        return {number for number, state in self._channels.items() if state == _CH_OPEN}

    @property
    def state_name(self) -> str:
        return _STATE_NAMES[self._state]

    def receive_data(self, data: bytes, now: float | None = None) -> list[Event]:
        """Feed bytes from the socket; returns the events they caused."""
        if now is not None:
            self._now = now
        if self._started is None:
            self._start_clock()
        if data:
            self._last_received = self._now
        if self._state == _CLOSED:
            return []
        events: list[Event] = []
        self._events = events
        if self._in:
            self._in += data
            self._consume(self._in)
        elif data:
            # Parse straight from the socket's bytes: frames sliced out of them are copied once.
            self._consume(data if type(data) is bytes else bytes(data))
        return events

    def data_to_send(self) -> bytes:
        """Everything queued for the socket, drained."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_size = 0
        return data

    def pending_bytes(self) -> int:
        return self._out_size

    @property
    def buffered_bytes(self) -> int:
        """Client bytes held until they complete: partial bodies and an incomplete frame."""
        held = len(self._in)
        for content in self._content.values():
            held += content.received
        return held

    def tick(self, now: float) -> list[Event]:
        """Advance the clock: heartbeats, heartbeat timeout, handshake and close timeouts."""
        self._now = now
        events: list[Event] = []
        self._events = events
        if self._started is None:
            self._start_clock()
            return events
        state = self._state
        if state == _CLOSED:
            return events
        if state == _CLOSING:
            if now >= self._close_deadline:
                self._terminate("timed out waiting for connection.close-ok")
            return events
        if state < _RUNNING and now - self._started >= self.limits.handshake_timeout_seconds:
            self._terminate("handshake timeout")
            return events
        if self.heartbeat and state >= _AWAIT_OPEN:
            if self._receiving and now - self._last_received >= 2 * self.heartbeat:
                events.append(ev.HeartbeatTimeout())
                self._channels.clear()
                self._content.clear()
                self._terminate(f"missed heartbeats from client, timeout: {self.heartbeat}s")
                return events
            if now - self._last_sent >= self.heartbeat / 2:
                self._write(codec.HEARTBEAT_FRAME)
        if self._in and state not in (_AWAIT_LOGIN, _AWAIT_VHOST):
            self._consume(self._in)
        return events

    # ---- answers to events -------------------------------------------------------------

    # A decision that arrives after the connection started closing (a close(), a timeout)
    # is moot and ignored.

    def accept_login(self) -> None:
        if self._state >= _CLOSING:
            return
        assert self._state == _AWAIT_LOGIN, "accept_login without a LoginRequested"
        self._state = _AWAIT_TUNE_OK
        self._send0(
            commands.Connection.Tune(
                channel_max=self.channel_max if self.limits.channel_max else 0,
                frame_max=self.limits.frame_max,
                heartbeat=self.limits.heartbeat_seconds,
            )
        )

    def refuse_login(self, text: str) -> None:
        if self._state >= _CLOSING:
            return
        assert self._state == _AWAIT_LOGIN, "refuse_login without a LoginRequested"
        self._send_close(ReplyCode.ACCESS_REFUSED, text, 10, 11)

    def accept_vhost(self) -> None:
        if self._state >= _CLOSING:
            return
        assert self._state == _AWAIT_VHOST, "accept_vhost without a VhostRequested"
        self._state = _RUNNING
        self.is_open = True
        self._send0(commands.Connection.OpenOk())

    def refuse_vhost(self, code: int, text: str) -> None:
        if self._state >= _CLOSING:
            return
        assert self._state == _AWAIT_VHOST, "refuse_vhost without a VhostRequested"
        self._send_close(code, text, 10, 40)

    # ---- sending -----------------------------------------------------------------------

    def send_method(self, channel: int, method: Any) -> None:
        if self._state >= _CLOSING:
            return
        if channel and self._channels.get(channel) != _CH_OPEN:
            return
        self._write(codec.method_frame(channel, method))

    def send_deliver(
        self,
        channel: int,
        consumer_tag: str,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes,
    ) -> None:
        if self._channels.get(channel) != _CH_OPEN or self._state >= _CLOSING:
            return
        self._out_size += codec.encode_deliver(
            self._out, channel, self.frame_max, consumer_tag, delivery_tag, redelivered,
            exchange, routing_key, properties, body,
        )
        self._last_sent = self._now

    def send_get_ok(
        self,
        channel: int,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        message_count: int,
        properties: bytes,
        body: bytes,
    ) -> None:
        if self._channels.get(channel) != _CH_OPEN or self._state >= _CLOSING:
            return
        self._out_size += codec.encode_get_ok(
            self._out, channel, self.frame_max, delivery_tag, redelivered, exchange, routing_key,
            message_count, properties, body,
        )
        self._last_sent = self._now

    def send_return(
        self,
        channel: int,
        reply_code: int,
        reply_text: str,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes,
    ) -> None:
        if self._channels.get(channel) != _CH_OPEN or self._state >= _CLOSING:
            return
        self._out_size += codec.encode_return(
            self._out, channel, self.frame_max, reply_code, reply_text, exchange, routing_key,
            properties, body,
        )
        self._last_sent = self._now

    def close_channel(
        self, channel: int, code: int, text: str, class_id: int = 0, method_id: int = 0
    ) -> None:
        """Send channel.close; the channel ignores all but close/close-ok until confirmed."""
        if self._channels.get(channel) != _CH_OPEN or self._state >= _CLOSING:
            return
        self._channels[channel] = _CH_CLOSING
        self._content.pop(channel, None)
        self._write(
            codec.method_frame(
                channel,
                commands.Channel.Close(
                    reply_code=code, reply_text=text[:255], class_id=class_id, method_id=method_id
                ),
            )
        )

    def close(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Send connection.close; ConnectionTerminated follows the client's close-ok."""
        if self._state >= _CLOSING:
            return
        if self._state == _AWAIT_HEADER:
            self._state = _CLOSED
            self.closed = True
            return
        self._send_close(code, text, class_id, method_id)

    def block(self, reason: str) -> None:
        if self._blocked or not self._supports_blocked():
            return
        self._blocked = True
        self._send0(commands.Connection.Blocked(reason=reason[:255]))

    def unblock(self) -> None:
        if not self._blocked:
            return
        self._blocked = False  # after a close, _send0 drops it
        self._send0(commands.Connection.Unblocked())

    def set_receiving(self, enabled: bool) -> None:
        if enabled and not self._receiving:
            self._last_received = self._now  # the client's silence starts counting now
        self._receiving = enabled

    # ---- output helpers ----------------------------------------------------------------

    def _supports_blocked(self) -> bool:
        return bool(self.capabilities.get("connection.blocked")) and self._state == _RUNNING

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        self._last_sent = self._now

    def _send0(self, method: Any) -> None:
        if self._state < _CLOSING:
            self._write(codec.method_frame(0, method))

    def _send_close(self, code: int, text: str, class_id: int, method_id: int) -> None:
        self._write(
            codec.method_frame(
                0,
                commands.Connection.Close(
                    reply_code=code, reply_text=text[:255], class_id=class_id, method_id=method_id
                ),
            )
        )
        self._state = _CLOSING
        self.is_open = False
        self._channels.clear()
        self._content.clear()
        self._close_deadline = self._now + self.limits.close_ok_timeout_seconds

    def _terminate(self, reason: str) -> None:
        self._state = _CLOSED
        self.closed = True
        self.is_open = False
        self._in = bytearray()
        self._events.append(ev.ConnectionTerminated(reason))

    def _start_clock(self) -> None:
        self._started = self._now
        self._last_received = self._now
        self._last_sent = self._now

    @staticmethod
    def _payload_limit(frame_max: int) -> int:
        # RabbitMQ lets payloads exceed frame_max - 8 by 8 bytes: clients are often off by 8.
        return frame_max if frame_max else 1 << 32

    # ---- errors ------------------------------------------------------------------------

    def _connection_error(
        self, code: ReplyCode, text: str, class_id: int = 0, method_id: int = 0, fatal: bool = False
    ) -> None:
        """Close the connection for a protocol violation; ``fatal``: do not wait for close-ok."""
        reply_text = f"{code.name} - {text}"
        self._events.append(ev.ConnectionProtocolError(int(code), reply_text))
        self._send_close(code, reply_text, class_id, method_id)
        if fatal:
            self._terminate(reply_text)
            raise _Fatal

    def _channel_error(
        self, channel: int, code: ReplyCode, text: str, class_id: int = 0, method_id: int = 0
    ) -> None:
        reply_text = f"{code.name} - {text}"
        self._events.append(ev.ChannelProtocolError(channel, int(code), reply_text))
        self.close_channel(channel, code, reply_text, class_id, method_id)

    def _frame_error(self, frame_type: int, error: str, fatal: bool) -> None:
        self._connection_error(
            ReplyCode.FRAME_ERROR, f"type {frame_type}, all octets = <<>>: {error}", fatal=fatal
        )

    # ---- parsing -----------------------------------------------------------------------

    def _consume(self, buf: bytes | bytearray) -> None:
        """Parse what ``buf`` holds; keep the incomplete rest in ``self._in``."""
        pos = self._parse(buf)
        if self._state == _CLOSED:
            self._in = bytearray()
        elif buf is self._in:
            if pos:
                del self._in[:pos]
        elif pos < len(buf):
            self._in = bytearray(memoryview(buf)[pos:])

    def _parse(self, buf: bytes | bytearray) -> int:
        """Handle every complete frame in ``buf``; returns the number of bytes consumed.

        The hot paths (basic.publish, its body frames, basic.ack on an open channel) are
        inlined here; everything else goes through the general handlers.
        """
        size = len(buf)
        pos = 0
        try:
            if self._state == _AWAIT_HEADER:
                if size < 8:
                    if buf != codec.PROTOCOL_HEADER[:size] and buf != codec.PROTOCOL_HEADER_0_9[:size]:
                        self._bad_protocol_header()
                    return 0
                header = bytes(buf[:8])
                if header != codec.PROTOCOL_HEADER and header != codec.PROTOCOL_HEADER_0_9:
                    self._bad_protocol_header()
                    return 0
                pos = 8
                self._send_start()
            unpack_head = _FRAME_HEAD.unpack_from
            unpack_index = _INDEX.unpack_from
            settlement_parsers = codec.SETTLEMENT_PARSERS
            contents = self._content
            channels = self._channels
            events = self._events
            max_payload = self._max_payload
            while size - pos >= 7:
                state = self._state
                if state == _AWAIT_LOGIN or state == _AWAIT_VHOST:
                    break
                frame_type, channel, payload = unpack_head(buf, pos)
                if payload > max_payload:
                    max_payload = self._max_payload  # tune-ok may have changed it
                    if payload > max_payload:
                        self._frame_error(
                            frame_type, f"{{frame_too_large,{payload},{max_payload - 8}}}", fatal=True
                        )
                end = pos + 7 + payload
                if end >= size:
                    break
                if buf[end] != 0xCE:
                    self._frame_error(
                        frame_type, f"{{invalid_frame_end_marker,{buf[end]}}}", fatal=True
                    )
                start = pos + 7
                pos = end + 1
                if frame_type == 3:
                    # A body frame of a publish in progress (content exists only on open
                    # channels of a running connection).
                    content = contents.get(channel)
                    if content is not None and content.properties is not None:
                        received = content.received + payload
                        if received <= content.body_size:
                            chunk = buf[start:end]
                            if type(chunk) is not bytes:
                                chunk = bytes(chunk)
                            if received == content.body_size:
                                del contents[channel]
                                if content.chunks:
                                    content.chunks.append(chunk)
                                    chunk = b"".join(content.chunks)
                                events.append(
                                    PublishReceived(channel, content.method, content.properties, chunk)
                                )
                            else:
                                content.chunks.append(chunk)
                                content.received = received
                            continue
                    self._body_frame(channel, buf, start, end)
                elif frame_type == 1:
                    if (
                        payload >= 4
                        and state == _RUNNING
                        and channel not in contents
                        and channels.get(channel) == _CH_OPEN
                    ):
                        index = unpack_index(buf, start)[0]
                        if index == _BASIC_PUBLISH:
                            self.has_published = True
                            try:
                                contents[channel] = _Content(codec.parse_publish(buf, start + 4, end))
                            except (ValueError, IndexError):
                                self._syntax_error(index)
                            continue
                        settle = settlement_parsers.get(index)
                        if settle is not None:
                            try:
                                events.append(MethodReceived(channel, settle(buf, start + 4, end)))
                            except ValueError:
                                self._syntax_error(index)
                            continue
                    self._method_frame(channel, buf, start, end)
                elif frame_type == 2:
                    self._header_frame(channel, buf, start, end)
                elif frame_type == 8:
                    if channel != 0 and state < _CLOSING:
                        self._frame_error(frame_type, "heartbeat on a non-zero channel", fatal=False)
                elif state < _CLOSING:
                    self._frame_error(frame_type, "unknown_frame", fatal=False)
        except _Fatal:
            return 0
        return pos

    def _bad_protocol_header(self) -> None:
        self._write(codec.PROTOCOL_HEADER)
        self._terminate("bad protocol header")

    def _send_start(self) -> None:
        self._state = _AWAIT_START_OK
        self._send0(
            commands.Connection.Start(
                version_major=0,
                version_minor=9,
                server_properties=self.server_properties,
                mechanisms=handshake.MECHANISMS,
                locales=handshake.LOCALES,
            )
        )

    # ---- method frames -----------------------------------------------------------------

    def _method_frame(self, channel: int, buf: bytes | bytearray, start: int, end: int) -> None:
        """Every method frame the fast path in _parse did not take."""
        if end - start < 4:
            if self._state < _CLOSING:
                self._frame_error(1, "method frame shorter than its class and method ids", False)
            return
        index = _INDEX.unpack_from(buf, start)[0]
        state = self._state
        if channel and state == _RUNNING:
            channel_state = self._channels.get(channel)
            if channel_state == _CH_OPEN:
                # (publish and settlements without a content in progress took the fast path)
                content = self._content.get(channel)
                if content is not None:
                    self._unexpected_mid_content(content)
                    return
                self._channel_method(channel, index, buf, start, end)
                return
            if channel_state == _CH_CLOSING:
                if index == _CHANNEL_CLOSE_OK or index == _CHANNEL_CLOSE:
                    if index == _CHANNEL_CLOSE:
                        self._write(codec.method_frame(channel, commands.Channel.CloseOk()))
                    del self._channels[channel]
                    self._events.append(ev.ChannelCloseConfirmed(channel))
                return
            self._closed_channel_method(channel, index, buf, start, end)
            return
        if state >= _CLOSING:
            if channel == 0 and index in (_CONNECTION_CLOSE, _CONNECTION_CLOSE_OK):
                if index == _CONNECTION_CLOSE:
                    self._write(codec.method_frame(0, commands.Connection.CloseOk()))
                self._terminate("connection closed")
                raise _Fatal
            return
        if channel:
            self._connection_error(
                ReplyCode.UNEXPECTED_FRAME,
                f"type 1, all octets = <<>>: unexpected frame on channel {channel} "
                f"in connection state {_STATE_NAMES[state]}",
            )
            return
        method = self._decode(index, buf, start, end)
        if method is not None:
            self._connection_method(method)

    def _decode(self, index: int, buf: bytes | bytearray, start: int, end: int) -> Any:
        """pamqp-decode a rare method; None (and the connection closing) when it is bad."""
        try:
            return codec.parse_method(index, bytes(buf[start + 4 : end]))
        except KeyError:
            self._connection_error(
                ReplyCode.NOT_IMPLEMENTED,
                f"unknown method: class {index >> 16}, method {index & 0xFFFF}",
                index >> 16,
                index & 0xFFFF,
            )
        except ValueError:
            self._syntax_error(index)
        return None

    def _syntax_error(self, index: int) -> None:
        name = getattr(codec.commands.INDEX_MAPPING.get(index), "name", "method")
        self._connection_error(
            ReplyCode.SYNTAX_ERROR,
            f"cannot decode {name} arguments",
            index >> 16,
            index & 0xFFFF,
        )

    def _unexpected_mid_content(self, content: _Content) -> None:
        if content.properties is None:
            text = "expected content header for class 60, got non content header frame instead"
        else:
            text = "expected content body, got non content body frame instead"
        self._connection_error(ReplyCode.UNEXPECTED_FRAME, text)

    def _closed_channel_method(
        self, channel: int, index: int, buf: bytes | bytearray, start: int, end: int
    ) -> None:
        """A method on a channel that is not open: only channel.open is allowed."""
        if index != _CHANNEL_OPEN:
            self._connection_error(ReplyCode.CHANNEL_ERROR, "expected 'channel.open'")
            return
        count = len(self._channels)
        if count >= self.channel_max:
            self._connection_error(
                ReplyCode.NOT_ALLOWED,
                f"number of channels opened ({count}) has reached the negotiated channel_max "
                f"({self.channel_max})",
                20,
                10,
            )
            return
        # RabbitMQ limits how many channels are open, not their numbers (aiormq's suite opens
        # channel 65535 under channel_max 2047), so neither do we.
        if self._decode(index, buf, start, end) is None:
            return
        self._channels[channel] = _CH_OPEN
        self._write(codec.method_frame(channel, commands.Channel.OpenOk()))
        self._events.append(ev.ChannelOpened(channel))

    def _channel_method(self, channel: int, index: int, buf: bytes | bytearray, start: int, end: int) -> None:
        method = self._decode(index, buf, start, end)
        if method is None:
            return
        if index >> 16 == _CONNECTION_CLASS:
            self._connection_error(
                ReplyCode.COMMAND_INVALID,
                f"connection method {method.name} on channel {channel}",
                index >> 16,
                index & 0xFFFF,
            )
        elif index == _CHANNEL_CLOSE:
            del self._channels[channel]
            self._write(codec.method_frame(channel, commands.Channel.CloseOk()))
            self._events.append(ev.ChannelClosedByPeer(channel))
        elif index == _CHANNEL_OPEN:
            self._connection_error(ReplyCode.CHANNEL_ERROR, "second 'channel.open' seen", 20, 10)
        elif index == _CHANNEL_CLOSE_OK:
            pass  # a stray close-ok: nothing to confirm
        else:
            self._events.append(ev.MethodReceived(channel, method))

    def _connection_method(self, method: Any) -> None:
        """A method on channel 0 before or while running."""
        state = self._state
        kind = type(method)
        if kind is commands.Connection.Close:
            self._write(codec.method_frame(0, commands.Connection.CloseOk()))
            self._events.append(ev.ConnectionClosedByPeer(method.reply_code, method.reply_text))
            self._channels.clear()
            self._content.clear()
            self._terminate("client closed the connection")
            raise _Fatal
        if state == _AWAIT_START_OK and kind is commands.Connection.StartOk:
            self._start_ok(method)
        elif state == _AWAIT_TUNE_OK and kind is commands.Connection.TuneOk:
            self._tune_ok(method)
        elif state == _AWAIT_OPEN and kind is commands.Connection.Open:
            self.vhost = method.virtual_host
            self._state = _AWAIT_VHOST
            self._events.append(ev.VhostRequested(method.virtual_host))
        elif state == _RUNNING and kind is commands.Connection.UpdateSecret:
            self._send0(commands.Connection.UpdateSecretOk())
        else:
            self._connection_error(
                ReplyCode.CHANNEL_ERROR,
                f"unexpected method in connection state {_STATE_NAMES[state]}",
                method.index >> 16,
                method.index & 0xFFFF,
            )

    def _start_ok(self, method: commands.Connection.StartOk) -> None:
        props = method.client_properties if isinstance(method.client_properties, dict) else {}
        self.client_properties = props
        capabilities = props.get("capabilities")
        self.capabilities = capabilities if isinstance(capabilities, dict) else {}
        try:
            user, secret = handshake.credentials(method.mechanism, method.response)
        except AMQPError as error:
            self._connection_error(error.code, error.text, error.class_id, error.method_id)
            return
        self.username = user
        self.mechanism = method.mechanism
        self._state = _AWAIT_LOGIN
        self._events.append(ev.LoginRequested(method.mechanism, user, secret))

    def _tune_ok(self, method: commands.Connection.TuneOk) -> None:
        limits = self.limits
        try:
            frame_max = handshake.negotiate("frame_max", FRAME_MIN_SIZE, method.frame_max, limits.frame_max)
            channel_max = handshake.negotiate("channel_max", 1, method.channel_max, limits.channel_max)
        except AMQPError as error:
            self._connection_error(error.code, error.text, error.class_id, error.method_id)
            return
        self.frame_max = frame_max
        self.channel_max = channel_max or 65535
        self.heartbeat = method.heartbeat
        self._max_payload = self._payload_limit(self.frame_max)
        self._last_received = self._now
        self._state = _AWAIT_OPEN

    # ---- content frames ----------------------------------------------------------------

    def _content_channel(self, channel: int, frame_type: int) -> None:
        """A header/body frame without a publish in progress: an error, unless ignored."""
        state = self._state
        if state >= _CLOSING:
            return
        if state != _RUNNING or channel == 0:
            self._connection_error(
                ReplyCode.UNEXPECTED_FRAME,
                f"type {frame_type}, all octets = <<>>: unexpected content frame on channel {channel}",
            )
            return
        channel_state = self._channels.get(channel)
        if channel_state == _CH_CLOSING:
            return
        if channel_state is None:
            self._connection_error(ReplyCode.CHANNEL_ERROR, "expected 'channel.open'")
            return
        self._connection_error(
            ReplyCode.UNEXPECTED_FRAME, "expected method frame, got non method frame instead"
        )

    def _header_frame(self, channel: int, buf: bytes | bytearray, start: int, end: int) -> None:
        content = self._content.get(channel)
        if content is None:  # report (or ignore) it as the state demands
            self._content_channel(channel, 2)
            return
        if content.properties is not None:
            self._connection_error(
                ReplyCode.UNEXPECTED_FRAME,
                "expected content body, got non content body frame instead",
            )
            return
        if end - start < 14:
            self._frame_error(2, "content header too short", fatal=False)
            return
        class_id, _weight, body_size = _CONTENT_HEAD.unpack_from(buf, start)
        if class_id != codec.BASIC_CLASS:
            self._connection_error(
                ReplyCode.UNEXPECTED_FRAME,
                f"expected content header for class 60, got one for class {class_id} instead",
            )
            return
        properties = bytes(buf[start + 12 : end])
        if properties == self._checked_properties:
            properties = self._checked_properties  # one object for the messages that repeat it
        else:
            # Publishers mostly repeat the same properties: check each distinct block once.
            try:
                codec.check_properties(properties)
            except ValueError:
                self._connection_error(
                    ReplyCode.SYNTAX_ERROR, "cannot decode content header properties", 60, 40
                )
                return
            self._checked_properties = properties
        max_size = self.limits.max_message_size
        if body_size > max_size:
            self._channel_error(
                channel,
                ReplyCode.PRECONDITION_FAILED,
                f"message size {body_size} is larger than configured max size {max_size}",
                60,
                40,
            )
            return
        if body_size == 0:
            del self._content[channel]
            self._events.append(ev.PublishReceived(channel, content.method, properties, b""))
            return
        content.properties = properties
        content.body_size = body_size

    def _body_frame(self, channel: int, buf: bytes | bytearray, start: int, end: int) -> None:
        content = self._content.get(channel)
        if content is None:
            self._content_channel(channel, 3)
            return
        if content.properties is None:
            self._connection_error(
                ReplyCode.UNEXPECTED_FRAME,
                "expected content header for class 60, got non content header frame instead",
            )
            return
        received = content.received + end - start
        if received > content.body_size:
            self._connection_error(
                ReplyCode.FRAME_ERROR,
                f"received {received} bytes of content body, more than the declared {content.body_size}",
            )
            return
        chunk = bytes(buf[start:end])
        if received == content.body_size and not content.chunks:
            del self._content[channel]
            self._events.append(ev.PublishReceived(channel, content.method, content.properties, chunk))
            return
        content.chunks.append(chunk)
        content.received = received
        if received == content.body_size:
            del self._content[channel]
            self._events.append(
                ev.PublishReceived(
                    channel, content.method, content.properties, b"".join(content.chunks)
                )
            )
