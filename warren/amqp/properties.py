"""Basic properties and field tables: the encoded property block of a content header.

A message's properties travel as the *encoded* block (property flags + property list, byte
for byte as the publisher sent them), so headers reach consumers unchanged. These functions
convert when the broker must read or change them (routing on headers, TTL, dead-lettering).
Field tables are decoded by hand (most messages carry headers); rare value types by pamqp.
"""

from __future__ import annotations

import datetime
import struct
from typing import Any

from pamqp import commands, decode, encode

U8 = struct.Struct(">B")
U16 = struct.Struct(">H")

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
    if kind == 0x54:  # T: timestamp
        if pos + 8 > end:
            raise ValueError("field value truncated")
        return _decode_timestamp(bytes(raw[pos : pos + 8])), pos + 8
    # Rare types (decimal, byte array): pamqp decodes them.
    try:
        consumed, value = decode.embedded_value(bytes(raw[pos - 1 : end]))
    except (TypeError, IndexError, KeyError, struct.error) as error:
        raise ValueError(f"field value malformed: {error}") from error
    stop = pos - 1 + consumed
    if stop > end:
        raise ValueError("field value truncated")
    return value, stop


# Decoded blocks, shared: publishers repeat the same properties, and every queued message
# keeps its decoded properties, so one dict per distinct block instead of one per message
# (about 200 bytes of RAM per queued message). Bounded: cleared when full.
_SHARED_MAX_BLOCK = 512
_SHARED_MAX_ENTRIES = 1024
_shared: dict[bytes, dict[str, Any]] = {}


def decode_properties(raw: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The present properties of an encoded property block, keyed by pamqp attribute names.

    Timestamps decode to timezone-aware datetimes and tables to dicts, as pamqp does.
    Raises ValueError when the block is malformed.

    The result may be shared with other messages that carry the same block: never change
    it in place (copy it, as dead-lettering and BCC removal do).
    """
    if type(raw) is bytes and len(raw) <= _SHARED_MAX_BLOCK:
        shared = _shared.get(raw)
        if shared is None:
            shared = _decode_properties(raw)
            if len(_shared) >= _SHARED_MAX_ENTRIES:
                _shared.clear()
            _shared[raw] = shared
        return shared
    return _decode_properties(raw)


def _decode_properties(raw: bytes | bytearray | memoryview) -> dict[str, Any]:
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
            end = pos + 4 + _U32.unpack_from(raw, pos)[0]
            if end > size:
                raise ValueError("headers truncated")
            result[name] = decode_table(raw, pos + 4, end)
            pos = end
        else:  # timestamp
            if pos + 8 > size:
                raise ValueError("timestamp truncated")
            result[name] = _decode_timestamp(bytes(raw[pos : pos + 8]))
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


def _decode_timestamp(raw: bytes) -> datetime.datetime | int:
    """A datetime, or the raw seconds when Python cannot represent the moment (year > 9999)."""
    try:
        return decode.timestamp(raw)[1]
    except (ValueError, OverflowError, OSError):
        return int(_TS.unpack(raw)[0])


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
