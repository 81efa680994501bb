"""AMQP 0-9-1 wire encoding: frames and methods.

pamqp encodes the rare methods; they are decoded into pamqp's classes by a strict decoder
driven by pamqp's argument types (pamqp's own trusts the lengths inside a frame). The hot
paths are hand-written with ``struct`` over the connection's receive buffer: parsing
basic.publish and the settlements (ack, nack, reject), and encoding basic.deliver / get-ok /
return with their content header and body frames, and the confirms (ack/nack) the broker
sends. Properties: :mod:`warren.amqp.properties`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pamqp import commands
from pamqp import frame as pamqp_frame

from warren.amqp.properties import (  # noqa: F401 - re-exported: the codec's public surface
    U8,
    U16,
    check_properties,
    decode_properties,
    decode_table,
    encode_properties,
)

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
PROTOCOL_HEADER_0_9 = b"AMQP\x01\x01\x00\x09"  # 0-9, which RabbitMQ treats as 0-9-1
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

BASIC_CLASS = 60
PUBLISH_INDEX = 0x003C0028  # basic.publish (60, 40)
ACK_INDEX = 0x003C0050  # basic.ack (60, 80)

FRAME_HEAD = struct.Struct(">BHI")  # type, channel, payload size
METHOD_HEAD = struct.Struct(">BHIHH")  # frame head + class id + method id
U32 = struct.Struct(">I")
INDEX = struct.Struct(">I")
ACK_ARGS = struct.Struct(">QB")
CONTENT_HEAD = struct.Struct(">HHQ")  # class id, weight, body size
_DELIVER_HEAD = struct.Struct(">BHIHHB")  # frame head, class, method, len(consumer tag)
_DELIVER_MID = struct.Struct(">QBB")  # delivery tag, redelivered, len(exchange)
_HEADER_FRAME = struct.Struct(">BBHIHHQ")  # frame-end of the method, header frame head, class, weight, size
_GET_OK_MID = struct.Struct(">QBB")
_END_BODY_HEAD = struct.Struct(">BBHI")  # frame-end of the header, then a body frame head
_RETURN_HEAD = struct.Struct(">BHIHHHB")  # frame head, class, method, reply code, len(reply text)


# ---- frames ----------------------------------------------------------------------------


_SETTLE_FRAME = struct.Struct(">BHIHHQBB")  # frame head, class, method, tag, bits, frame-end


def method_frame(channel: int, method: Any) -> bytes:
    """One method frame: basic.ack/nack (publisher confirms) by hand, the rest by pamqp."""
    kind = type(method)
    if kind is _Ack:
        return _SETTLE_FRAME.pack(FRAME_METHOD, channel, 13, 60, 80, method.delivery_tag,
                                  1 if method.multiple else 0, FRAME_END)
    if kind is _Nack:
        bits = (1 if method.multiple else 0) | (2 if method.requeue else 0)
        return _SETTLE_FRAME.pack(FRAME_METHOD, channel, 13, 60, 120, method.delivery_tag, bits, FRAME_END)
    return pamqp_frame.marshal(method, channel)


_INLINE_BODY_MAX = 65536  # bodies up to this size are joined into the frames' bytes


def _finish_content(
    parts: list[bytes], out: list[bytes], channel: int, frame_max: int, properties: bytes, body: bytes
) -> int:
    """Append the content header (its head is already the last item of ``parts``), the
    body frames and then everything to ``out``; returns the number of bytes appended."""
    size = len(body)
    chunk = frame_max - 8 if frame_max else size
    parts.append(properties)
    if not size:
        parts.append(FRAME_END_BYTE)
        data = b"".join(parts)
        out.append(data)
        return len(data)
    if size <= chunk and size <= _INLINE_BODY_MAX:
        # the header's frame-end and the body frame's head in one pack
        parts.append(_END_BODY_HEAD.pack(FRAME_END, FRAME_BODY, channel, size))
        parts.append(body)
        parts.append(FRAME_END_BYTE)
        data = b"".join(parts)
        out.append(data)
        return len(data)
    parts.append(FRAME_END_BYTE)
    head = b"".join(parts)
    out.append(head)
    total = len(head)
    view = memoryview(body)
    for offset in range(0, size, chunk):
        piece = bytes(view[offset : offset + chunk])
        out.append(FRAME_HEAD.pack(FRAME_BODY, channel, len(piece)))
        out.append(piece)
        out.append(FRAME_END_BYTE)
        total += len(piece) + 8
    return total


def encode_deliver(
    out: list[bytes],
    channel: int,
    frame_max: int,
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    properties: bytes,
    body: bytes,
) -> int:
    """Append basic.deliver + content header + body frames to ``out``; returns their size.

    Short strings longer than 255 bytes are programmer errors (struct.error).
    """
    ctag = consumer_tag.encode()
    ex = exchange.encode()
    rk = routing_key.encode()
    parts = [
        _DELIVER_HEAD.pack(FRAME_METHOD, channel, 16 + len(ctag) + len(ex) + len(rk), 60, 60, len(ctag)),
        ctag,
        _DELIVER_MID.pack(delivery_tag, 1 if redelivered else 0, len(ex)),
        ex,
        U8.pack(len(rk)),
        rk,
        _HEADER_FRAME.pack(FRAME_END, FRAME_HEADER, channel, 12 + len(properties), 60, 0, len(body)),
    ]
    return _finish_content(parts, out, channel, frame_max, properties, body)


def encode_get_ok(
    out: list[bytes],
    channel: int,
    frame_max: int,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    message_count: int,
    properties: bytes,
    body: bytes,
) -> int:
    """Append basic.get-ok + content header + body frames to ``out``; returns their size."""
    ex = exchange.encode()
    rk = routing_key.encode()
    parts = [
        METHOD_HEAD.pack(FRAME_METHOD, channel, 19 + len(ex) + len(rk), 60, 71),
        _GET_OK_MID.pack(delivery_tag, 1 if redelivered else 0, len(ex)),
        ex,
        U8.pack(len(rk)),
        rk,
        U32.pack(message_count),
        _HEADER_FRAME.pack(FRAME_END, FRAME_HEADER, channel, 12 + len(properties), 60, 0, len(body)),
    ]
    return _finish_content(parts, out, channel, frame_max, properties, body)


def encode_return(
    out: list[bytes],
    channel: int,
    frame_max: int,
    reply_code: int,
    reply_text: str,
    exchange: str,
    routing_key: str,
    properties: bytes,
    body: bytes,
) -> int:
    """Append basic.return + content header + body frames to ``out``; returns their size."""
    text = reply_text.encode()[:255]
    ex = exchange.encode()
    rk = routing_key.encode()
    parts = [
        _RETURN_HEAD.pack(FRAME_METHOD, channel, 9 + len(text) + len(ex) + len(rk), 60, 50, reply_code, len(text)),
        text,
        U8.pack(len(ex)),
        ex,
        U8.pack(len(rk)),
        rk,
        _HEADER_FRAME.pack(FRAME_END, FRAME_HEADER, channel, 12 + len(properties), 60, 0, len(body)),
    ]
    return _finish_content(parts, out, channel, frame_max, properties, body)


# ---- hot-path method parsing -----------------------------------------------------------

_new_publish = commands.Basic.Publish.__new__
_new_ack = commands.Basic.Ack.__new__
_Publish = commands.Basic.Publish
_Ack = commands.Basic.Ack
_Nack = commands.Basic.Nack
_Reject = commands.Basic.Reject


# Exchange names and routing keys, decoded once and shared by every message that names them
# (a queued message keeps its routing key: one str per distinct key, not one per message).
# Bounded: cleared when full.
_SHORTSTR_MAX_ENTRIES = 4096
_shortstrs: dict[bytes, str] = {}


def shared_shortstr(raw: bytes) -> str:
    """``raw.decode()``, the same str object for the same bytes (UnicodeDecodeError as decode)."""
    text = _shortstrs.get(raw)
    if text is None:
        text = raw.decode()
        if len(_shortstrs) >= _SHORTSTR_MAX_ENTRIES:
            _shortstrs.clear()
        _shortstrs[raw] = text
    return text


def parse_publish(buf: bytes | bytearray, start: int, end: int) -> commands.Basic.Publish:
    """basic.publish arguments in ``buf[start:end]`` (after class and method ids).

    Builds the pamqp object without its (slow) validation. Raises ValueError when the
    arguments are truncated or not UTF-8.
    """
    pos = start + 2  # ticket
    if pos >= end:
        raise ValueError("basic.publish truncated")
    size = buf[pos]
    pos += 1
    exchange = shared_shortstr(bytes(buf[pos : pos + size])) if size else ""
    pos += size
    if pos >= end:
        raise ValueError("basic.publish truncated")
    size = buf[pos]
    pos += 1
    routing_key = shared_shortstr(bytes(buf[pos : pos + size])) if size else ""
    pos += size
    if pos >= end:
        raise ValueError("basic.publish truncated")
    bits = buf[pos]
    method = _new_publish(_Publish)
    method.ticket = 0
    method.exchange = exchange
    method.routing_key = routing_key
    method.mandatory = bool(bits & 1)
    method.immediate = bool(bits & 2)
    return method


def parse_ack(buf: bytes | bytearray, start: int, end: int) -> commands.Basic.Ack:
    """basic.ack arguments in ``buf[start:end]``; ValueError when truncated."""
    if end - start < 9:
        raise ValueError("basic.ack truncated")
    tag, bits = ACK_ARGS.unpack_from(buf, start)
    method = _new_ack(_Ack)
    method.delivery_tag = tag
    method.multiple = bool(bits & 1)
    return method


def parse_nack(buf: bytes | bytearray, start: int, end: int) -> commands.Basic.Nack:
    """basic.nack arguments in ``buf[start:end]``; ValueError when truncated."""
    if end - start < 9:
        raise ValueError("basic.nack truncated")
    tag, bits = ACK_ARGS.unpack_from(buf, start)
    method = _Nack.__new__(_Nack)
    method.delivery_tag = tag
    method.multiple = bool(bits & 1)
    method.requeue = bool(bits & 2)
    return method


def parse_reject(buf: bytes | bytearray, start: int, end: int) -> commands.Basic.Reject:
    """basic.reject arguments in ``buf[start:end]``; ValueError when truncated."""
    if end - start < 9:
        raise ValueError("basic.reject truncated")
    tag, bits = ACK_ARGS.unpack_from(buf, start)
    method = _Reject.__new__(_Reject)
    method.delivery_tag = tag
    method.requeue = bool(bits & 1)
    return method


# Settlement methods parsed by hand on the hot path: index -> parser.
SETTLEMENT_PARSERS: dict[int, Callable[[bytes | bytearray, int, int], Any]] = {
    ACK_INDEX: parse_ack,
    commands.Basic.Nack.index: parse_nack,
    commands.Basic.Reject.index: parse_reject,
}


# ---- generic method parsing: pamqp's method classes, a strict decoder --------------------

# pamqp's unmarshal trusts the lengths inside a frame: a truncated string comes back short
# and a table's entries are read past the table's end. RabbitMQ refuses both (and so do we:
# 502), so the rare methods are decoded here, field tables by the same strict decoder as
# message headers. Integers decode as pamqp decodes them (its longlong is signed).
_SHORTSTR, _LONGSTR, _TABLE, _BIT = 0, 1, 2, 3
_FIXED_ARGS: dict[str, struct.Struct] = {
    "octet": U8,
    "short": U16,
    "long": U32,
    "longlong": struct.Struct(">q"),
    "timestamp": struct.Struct(">Q"),
}
_VARIABLE_ARGS = {"shortstr": _SHORTSTR, "longstr": _LONGSTR, "table": _TABLE, "bit": _BIT}
_plans: dict[type, tuple[tuple[str, int | struct.Struct], ...]] = {}


def _plan_of(cls: type) -> tuple[tuple[str, int | struct.Struct], ...]:
    """(attribute, kind) in wire order: a decoder code or the struct of a fixed-size value."""
    plan = _plans.get(cls)
    if plan is None:
        steps: list[tuple[str, int | struct.Struct]] = []
        for name in cls.__slots__:  # type: ignore[attr-defined]
            kind = getattr(cls, "_" + name)
            step = _FIXED_ARGS.get(kind)
            steps.append((name, step if step is not None else _VARIABLE_ARGS[kind]))
        plan = _plans[cls] = tuple(steps)
    return plan


def parse_method(index: int, data: bytes) -> Any:
    """Decode a rare method into its pamqp class. KeyError: unknown method; ValueError:
    malformed (a length that claims more bytes than its field holds, bad UTF-8 in a short
    string, a table nested deeper than MAX_TABLE_DEPTH). Trailing bytes are ignored.
    """
    cls: Any = commands.INDEX_MAPPING[index]
    method = cls.__new__(cls)
    size = len(data)
    pos = 0
    octet = 0
    bit = 8  # the next bit's position in ``octet``; 8: the next bit starts a new octet
    for name, kind in _plan_of(cls):
        if isinstance(kind, struct.Struct):
            bit = 8
            stop = pos + kind.size
            if stop > size:
                raise ValueError(f"{cls.name}: {name} truncated")
            value: Any = kind.unpack_from(data, pos)[0]
        elif kind == _BIT:
            if bit == 8:
                if pos >= size:
                    raise ValueError(f"{cls.name}: {name} truncated")
                octet = data[pos]
                pos += 1
                bit = 0
            setattr(method, name, bool(octet >> bit & 1))
            bit += 1
            continue
        elif kind == _SHORTSTR:
            bit = 8
            if pos >= size:
                raise ValueError(f"{cls.name}: {name} truncated")
            stop = pos + 1 + data[pos]
            if stop > size:
                raise ValueError(f"{cls.name}: {name} truncated")
            value = data[pos + 1 : stop].decode()  # UnicodeDecodeError is a ValueError
        else:  # long string or table: a 32-bit length first
            bit = 8
            if pos + 4 > size:
                raise ValueError(f"{cls.name}: {name} truncated")
            stop = pos + 4 + U32.unpack_from(data, pos)[0]
            if stop > size:
                raise ValueError(f"{cls.name}: {name} truncated")
            if kind == _TABLE:
                value = decode_table(data, pos + 4, stop)
            else:
                value = data[pos + 4 : stop]
                try:
                    value = value.decode()
                except UnicodeDecodeError:
                    pass  # as pamqp: bytes when not UTF-8 (e.g. a binary start-ok response)
        pos = stop
        setattr(method, name, value)
    return method
