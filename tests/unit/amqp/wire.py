"""Client-side bytes for feeding a ServerConnection, produced with pamqp as a client would."""

from __future__ import annotations

import struct
from typing import Any

from pamqp import body, commands, frame, header, heartbeat
from pamqp import decode as pdecode

from warren.amqp import events as ev
from warren.amqp.connection import ServerConnection
from warren.limits import Limits

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def method(channel: int, m: Any) -> bytes:
    return frame.marshal(m, channel)


def content(channel: int, props: commands.Basic.Properties, payload: bytes, frame_max: int = 131072) -> bytes:
    out = [frame.marshal(header.ContentHeader(0, len(payload), props), channel)]
    step = frame_max - 8
    for i in range(0, len(payload), step):
        out.append(frame.marshal(body.ContentBody(payload[i : i + step]), channel))
    return b"".join(out)


def publish(channel: int, payload: bytes, exchange: str = "", routing_key: str = "q",
            props: commands.Basic.Properties | None = None, mandatory: bool = False,
            frame_max: int = 131072) -> bytes:
    props = props or commands.Basic.Properties()
    return method(channel, commands.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                  mandatory=mandatory)) + content(
        channel, props, payload, frame_max)


def header_frame(channel: int, size: int,
                 props: commands.Basic.Properties | None = None) -> bytes:
    return frame.marshal(header.ContentHeader(0, size, props or commands.Basic.Properties()), channel)


def body_frame(channel: int, data: bytes) -> bytes:
    return frame.marshal(body.ContentBody(data), channel)


def heartbeat_frame() -> bytes:
    return heartbeat.Heartbeat().marshal()


def raw_frame(frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


class Same:
    """Wraps a pamqp object so that == compares type and fields (pamqp methods compare by
    identity); attribute access passes through."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self.obj, name)

    def __eq__(self, other: object) -> bool:
        other = other.obj if isinstance(other, Same) else other
        if type(other) is not type(self.obj):
            return False
        try:
            return dict(other) == dict(self.obj)  # type: ignore[call-overload]
        except TypeError:
            return vars(other) == vars(self.obj)

    def __repr__(self) -> str:
        try:
            return f"{getattr(self.obj, 'name', type(self.obj).__name__)}{dict(self.obj)}"
        except TypeError:
            return repr(self.obj)


def read_frames(data: bytes) -> list[tuple[int, Any]]:
    """Decode the server's output into (channel, pamqp object) pairs."""
    frames = []
    while data:
        if data.startswith(b"AMQP"):
            frames.append((0, header.ProtocolHeader()))
            data = data[8:]
            continue
        used, channel, obj = frame.unmarshal(data)
        frames.append((channel, Same(obj)))
        data = data[used:]
    return frames


def methods(data: bytes) -> list[Any]:
    return [obj for _, obj in read_frames(data)]


def start_ok(mechanism: str = "PLAIN", response: str | bytes = "\0guest\0guest",
             capabilities: dict[str, Any] | None = None) -> bytes:
    caps = capabilities if capabilities is not None else {"connection.blocked": True,
                                                          "authentication_failure_close": True}
    return method(0, commands.Connection.StartOk(
        client_properties={"product": "test", "capabilities": caps},
        mechanism=mechanism, response=response, locale="en_US"))


def open_connection(limits: Limits | None = None, heartbeat: int = 0, frame_max: int = 131072,
                    channel_max: int = 2047, capabilities: dict[str, Any] | None = None,
                    now: float = 0.0) -> ServerConnection:
    """A connection through the whole handshake, output drained."""
    conn = ServerConnection(limits or Limits())
    conn.tick(now)
    events = conn.receive_data(PROTOCOL_HEADER + start_ok(capabilities=capabilities), now)
    assert events == [ev.LoginRequested("PLAIN", "guest", "guest")], events
    conn.accept_login()
    events = conn.receive_data(method(0, commands.Connection.TuneOk(
        channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat)) + method(
        0, commands.Connection.Open(virtual_host="/")), now)
    assert events == [ev.VhostRequested("/")], events
    conn.accept_vhost()
    assert conn.is_open
    conn.data_to_send()
    return conn


def open_channel(conn: ServerConnection, channel: int = 1, now: float = 0.0) -> None:
    events = conn.receive_data(method(channel, commands.Channel.Open()), now)
    assert events == [ev.ChannelOpened(channel)], events
    assert methods(conn.data_to_send()) == [commands.Channel.OpenOk()]


def close_of(data: bytes) -> Any:
    """The connection.close or channel.close among the server's output frames."""
    found = [m for m in methods(data) if isinstance(m.obj, commands.Connection.Close | commands.Channel.Close)]
    assert len(found) == 1, found
    return found[0]


def decode_table(raw: bytes) -> dict[str, Any]:
    return pdecode.field_table(raw)[1]
