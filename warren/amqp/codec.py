"""AMQP 0-9-1 wire encoding: frames, the hot-path methods, and basic properties.

pamqp encodes and decodes the rare methods. The hot paths are hand-written with ``struct``
over the connection's receive buffer: parsing basic.publish and basic.ack, and encoding
basic.deliver / get-ok / return with their content header and body frames.

A message's properties travel as the *encoded* property block of its content header
(property flags + property list, byte for byte as the publisher sent them), so headers reach
consumers unchanged; :func:`decode_properties` / :func:`encode_properties` convert when the
broker needs to read or change them.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable
from typing import Any

from pamqp import commands, decode, encode
from pamqp import frame as pamqp_frame

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
U8 = struct.Struct(">B")
U16 = struct.Struct(">H")
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
    exchange = buf[pos : pos + size].decode()
    pos += size
    if pos >= end:
        raise ValueError("basic.publish truncated")
    size = buf[pos]
    pos += 1
    routing_key = buf[pos : pos + size].decode()
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


# ---- generic method parsing (pamqp) with a strict length check ---------------------------

_FIXED_SIZES = {"octet": 1, "short": 2, "long": 4, "longlong": 8, "timestamp": 8}
_arg_types: dict[type, tuple[str, ...]] = {}


def _types_of(cls: type) -> tuple[str, ...]:
    types = _arg_types.get(cls)
    if types is None:
        types = tuple(getattr(cls, "_" + name) for name in cls.__slots__)  # type: ignore[attr-defined]
        _arg_types[cls] = types
    return types


def check_arguments(cls: type, data: bytes) -> None:
    """Raise ValueError unless ``data`` holds every argument of method ``cls`` in full.

    pamqp's decoder silently accepts truncated strings; RabbitMQ rejects them.
    """
    pos = 0
    size = len(data)
    bits = 0
    for kind in _types_of(cls):
        if kind == "bit":
            if bits == 0:
                pos += 1
            bits = (bits + 1) % 8
            continue
        bits = 0
        fixed = _FIXED_SIZES.get(kind)
        if fixed is not None:
            pos += fixed
        elif kind == "shortstr":
            if pos >= size:
                raise ValueError("short string truncated")
            pos += 1 + data[pos]
        elif kind in ("longstr", "table"):
            if pos + 4 > size:
                raise ValueError("long string truncated")
            pos += 4 + U32.unpack_from(data, pos)[0]
        else:  # pragma: no cover - the 0-9-1 method set has no other argument types
            raise ValueError(f"unsupported argument type {kind}")
        if pos > size:
            raise ValueError("method arguments truncated")
    if pos > size:
        raise ValueError("method arguments truncated")


def parse_method(index: int, data: bytes) -> Any:
    """Decode a rare method with pamqp. KeyError: unknown method; ValueError: malformed."""
    cls: Any = commands.INDEX_MAPPING[index]
    check_arguments(cls, data)
    method = cls.__new__(cls)
    try:
        method.unmarshal(data)
    except (struct.error, TypeError, IndexError, KeyError, RecursionError) as error:
        # RecursionError: tables nested thousands deep, a cheap attack on recursive decoders
        raise ValueError(f"{type(error).__name__}: {error}"[:200]) from error
    return method


# ---- basic properties ------------------------------------------------------------------

# (attribute name, pamqp type, flag bit) in wire order.
PROPERTY_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("content_type", "shortstr", 1 << 15),
    ("content_encoding", "shortstr", 1 << 14),
    ("headers", "table", 1 << 13),
    ("delivery_mode", "octet", 1 << 12),
    ("priority", "octet", 1 << 11),
    ("correlation_id", "shortstr", 1 << 10),
    ("reply_to", "shortstr", 1 << 9),
    ("expiration", "shortstr", 1 << 8),
    ("message_id", "shortstr", 1 << 7),
    ("timestamp", "timestamp", 1 << 6),
    ("message_type", "shortstr", 1 << 5),
    ("user_id", "shortstr", 1 << 4),
    ("app_id", "shortstr", 1 << 3),
    ("cluster_id", "shortstr", 1 << 2),
)
PROPERTY_NAMES = frozenset(name for name, _, _ in PROPERTY_FIELDS)
_TS = struct.Struct(">Q")


# ---- field tables ------------------------------------------------------------------------

MAX_TABLE_DEPTH = 64  # nesting of tables/arrays in headers; deeper is refused as malformed
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
# type octet -> (struct, size) for fixed-size values, decoded as pamqp decodes them
_FIXED_VALUES: dict[int, tuple[struct.Struct, int]] = {
    ord("b"): (_I8, 1),
    ord("B"): (U8, 1),
    ord("s"): (_I16, 2),  # RabbitMQ's (and pamqp's) reading: signed 16-bit
    ord("u"): (U16, 2),
    ord("I"): (_I32, 4),
    ord("i"): (_U32, 4),
    ord("l"): (_I64, 8),
    ord("L"): (_I64, 8),
    ord("f"): (_F32, 4),
    ord("d"): (_F64, 8),
}


def decode_table(raw: bytes | bytearray | memoryview, start: int, end: int, depth: int = 0) -> dict[str, Any]:
    """The field table whose entries span ``raw[start:end]``; values as pamqp decodes them.

    Hand-written for the publish path (headers arrive with most messages); rare value types
    are handed to pamqp. Raises ValueError when malformed or nested deeper than
    MAX_TABLE_DEPTH.
    """
    if depth > MAX_TABLE_DEPTH:
        raise ValueError("field table nested too deep")
    result: dict[str, Any] = {}
    pos = start
    try:
        while pos < end:
            key_end = pos + 1 + raw[pos]
            if key_end > end:
                raise ValueError("field table key truncated")
            key = bytes(raw[pos + 1 : key_end]).decode()
            result[key], pos = _decode_value(raw, key_end, end, depth)
    except (IndexError, struct.error) as error:
        raise ValueError(f"field table malformed: {error}") from error
    return result


def _decode_value(raw: bytes | bytearray | memoryview, pos: int, end: int, depth: int) -> tuple[Any, int]:
    if pos >= end:
        raise ValueError("field value truncated")
    kind = raw[pos]
    pos += 1
    if kind == 0x53 or kind == 0x46 or kind == 0x41:  # S: long string, F: table, A: array
        if pos + 4 > end:
            raise ValueError("field value truncated")
        stop = pos + 4 + _U32.unpack_from(raw, pos)[0]
        if stop > end:
            raise ValueError("field value truncated")
        if kind == 0x53:
            data = bytes(raw[pos + 4 : stop])
            try:
                return data.decode(), stop
            except UnicodeDecodeError:
                return data, stop  # as pamqp: bytes when not UTF-8
        if kind == 0x46:
            return decode_table(raw, pos + 4, stop, depth + 1), stop
        if depth >= MAX_TABLE_DEPTH:
            raise ValueError("field array nested too deep")
        items = []
        inner = pos + 4
        while inner < stop:
            item, inner = _decode_value(raw, inner, stop, depth + 1)
            items.append(item)
        return items, stop
    if kind == 0x74:  # t: boolean
        if pos >= end:
            raise ValueError("field value truncated")
        return bool(raw[pos]), pos + 1
    if kind == 0x56 or kind == 0:  # V: void (and NUL, seen in the wild)
        return None, pos
    fixed = _FIXED_VALUES.get(kind)
    if fixed is not None:
        unpacker, size = fixed
        if pos + size > end:
            raise ValueError("field value truncated")
        return unpacker.unpack_from(raw, pos)[0], pos + size
    # Rare types (decimal, timestamp, byte array): pamqp decodes them.
    try:
        consumed, value = decode.embedded_value(bytes(raw[pos - 1 : end]))
    except (TypeError, IndexError, KeyError, struct.error) as error:
        raise ValueError(f"field value malformed: {error}") from error
    stop = pos - 1 + consumed
    if stop > end:
        raise ValueError("field value truncated")
    return value, stop


def decode_properties(raw: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The present properties of an encoded property block, keyed by pamqp attribute names.

    Timestamps decode to timezone-aware datetimes and tables to dicts, as pamqp does.
    Raises ValueError when the block is malformed.
    """
    size = len(raw)
    if size < 2:
        raise ValueError("property flags truncated")
    flags = U16.unpack_from(raw, 0)[0]
    pos = 2
    extra = flags
    while extra & 1:  # continuation flag words carry no 0-9-1 properties
        if pos + 2 > size:
            raise ValueError("property flags truncated")
        extra = U16.unpack_from(raw, pos)[0]
        pos += 2
    result: dict[str, Any] = {}
    if not flags & 0xFFFC:
        return result
    for name, kind, bit in PROPERTY_FIELDS:
        if not flags & bit:
            continue
        if kind == "shortstr":
            if pos >= size:
                raise ValueError(f"property {name} truncated")
            end = pos + 1 + raw[pos]
            if end > size:
                raise ValueError(f"property {name} truncated")
            # surrogateescape: a non-UTF-8 string survives a decode/encode round trip
            result[name] = bytes(raw[pos + 1 : end]).decode("utf-8", "surrogateescape")
            pos = end
        elif kind == "octet":
            if pos >= size:
                raise ValueError(f"property {name} truncated")
            result[name] = raw[pos]
            pos += 1
        elif kind == "table":
            if pos + 4 > size:
                raise ValueError("headers truncated")
            end = pos + 4 + U32.unpack_from(raw, pos)[0]
            if end > size:
                raise ValueError("headers truncated")
            result[name] = decode_table(raw, pos + 4, end)
            pos = end
        else:  # timestamp
            if pos + 8 > size:
                raise ValueError("timestamp truncated")
            _, result[name] = decode.timestamp(bytes(raw[pos : pos + 8]))
            pos += 8
    return result


_OCTET_PROPS = (1 << 12) | (1 << 11)
_TIMESTAMP_PROP = 1 << 6
_HEADERS_PROP = 1 << 13


def check_properties(raw: bytes) -> None:
    """Raise ValueError unless ``raw`` is a well-formed property block.

    The hot path of every publish: without headers it only walks the lengths; with
    headers it decodes them once (malformed tables must not reach the broker).
    """
    if len(raw) < 2:
        raise ValueError("property flags truncated")
    flags = U16.unpack_from(raw, 0)[0]
    if flags & 1 or flags & _HEADERS_PROP:
        decode_properties(raw)
        return
    size = len(raw)
    pos = 2
    bit = 1 << 15
    while bit > 2:
        if flags & bit:
            if bit & _OCTET_PROPS:
                pos += 1
            elif bit == _TIMESTAMP_PROP:
                pos += 8
            else:  # short string
                if pos >= size:
                    raise ValueError("properties truncated")
                pos += 1 + raw[pos]
            if pos > size:
                raise ValueError("properties truncated")
        bit >>= 1


def _encode_timestamp(value: Any) -> bytes:
    if isinstance(value, int):
        return _TS.pack(value)
    if isinstance(value, datetime.datetime):
        return encode.timestamp(value)
    raise TypeError(f"timestamp must be a datetime or int, got {type(value).__name__}")


def encode_properties(props: commands.Basic.Properties | dict[str, Any]) -> bytes:
    """Encode properties (a pamqp Basic.Properties or a dict as from decode_properties).

    ``None`` means absent; an empty string is encoded as present, so a decoded block
    re-encodes to the same bytes.
    """
    if isinstance(props, commands.Basic.Properties):
        return props.marshal()
    unknown = set(props) - PROPERTY_NAMES
    assert not unknown, f"unknown basic properties: {sorted(unknown)}"
    flags = 0
    parts: list[bytes] = []
    for name, kind, bit in PROPERTY_FIELDS:
        value = props.get(name)
        if value is None:
            continue
        flags |= bit
        if kind == "shortstr":
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
            if len(raw) > 255:
                raise ValueError(f"property {name} longer than 255 bytes")
            parts.append(U8.pack(len(raw)))
            parts.append(raw)
        elif kind == "octet":
            parts.append(U8.pack(value))
        elif kind == "table":
            parts.append(encode.field_table(value))
        else:
            parts.append(_encode_timestamp(value))
    return U16.pack(flags) + b"".join(parts)
