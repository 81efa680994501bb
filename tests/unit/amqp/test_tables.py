"""The hand-written field-table decoder agrees with pamqp and refuses hostile nesting."""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, decode, encode

from tests.unit.amqp.wire import close_of, open_channel, open_connection, raw_frame
from warren.amqp import events as ev
from warren.amqp.properties import decode_properties, decode_table

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=20),
    st.binary(max_size=10).map(bytearray),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-1000, max_value=1000),
    st.datetimes(min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=0, tzinfo=datetime.UTC)),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
tables = st.dictionaries(st.text(max_size=12), values, max_size=8)


def pamqp_table(raw: bytes) -> dict[str, Any]:
    return decode.field_table(raw)[1]


@settings(max_examples=250, deadline=2000)
@given(table=tables)
def test_decoder_agrees_with_pamqp(table: dict[str, Any]) -> None:
    raw = encode.field_table(table)
    assert decode_table(raw, 4, len(raw)) == pamqp_table(raw)


@settings(max_examples=250, deadline=2000)
@given(raw=st.binary(max_size=200))
def test_garbage_tables_raise_value_error_only(raw: bytes) -> None:
    try:
        decode_table(raw, 0, len(raw))
    except ValueError:
        pass


def test_long_string_that_is_not_utf8_stays_bytes_as_in_pamqp() -> None:
    raw = b"\x01kS\x00\x00\x00\x01\xff"
    assert decode_table(raw, 0, len(raw)) == {"k": b"\xff"}


def nested_table(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        entry = b"\x01kF" + struct.pack(">I", len(inner)) + inner
        inner = entry
    return struct.pack(">I", len(inner)) + inner


def test_deeply_nested_headers_are_refused() -> None:
    raw = nested_table(5000)
    with pytest.raises(ValueError):
        decode_table(raw, 4, len(raw))
    props = struct.pack(">H", 1 << 13) + raw
    with pytest.raises(ValueError):
        decode_properties(props)
    assert decode_table(nested_table(10), 4, len(nested_table(10)))  # modest nesting is fine


def test_deeply_nested_method_arguments_are_a_syntax_error_not_a_crash() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    declare = commands.Queue.Declare(queue="q")
    args = declare.marshal()[:-4]  # drop the empty arguments table
    payload = struct.pack(">I", declare.index) + args + nested_table(5000)
    events = conn.receive_data(raw_frame(1, 1, payload), 0.0)
    assert [type(e) for e in events] == [ev.ConnectionProtocolError]
    assert close_of(conn.data_to_send()).reply_code == 502


def test_decimal_and_timestamp_values_decode_via_pamqp() -> None:
    table = {"d": decimal.Decimal("1.25"), "t": datetime.datetime(2020, 1, 2, tzinfo=datetime.UTC)}
    raw = encode.field_table(table)
    assert decode_table(raw, 4, len(raw)) == table


def test_timestamps_beyond_year_9999_decode_to_their_seconds() -> None:
    # amqp091-go's quick-check publishes such timestamps; RabbitMQ passes them through
    huge = 2**62
    table = b"\x01tT" + struct.pack(">Q", huge)
    assert decode_table(table, 0, len(table)) == {"t": huge}
    properties = struct.pack(">H", 1 << 6) + struct.pack(">Q", huge)
    assert decode_properties(properties) == {"timestamp": huge}
