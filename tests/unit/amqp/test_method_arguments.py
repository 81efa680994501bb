"""Method arguments are decoded strictly: a length that claims more bytes than its field
holds is 502 SYNTAX_ERROR (as RabbitMQ refuses it), never a silently shortened value."""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, encode

from tests.unit.amqp.wire import close_of, open_channel, open_connection, raw_frame
from warren.amqp import codec
from warren.amqp import events as ev

# Methods a client sends that carry a field table (always their last argument).
TABLE_METHODS: list[Any] = [
    commands.Queue.Declare(queue="q"),
    commands.Queue.Bind(queue="q", exchange="x", routing_key="k"),
    commands.Queue.Unbind(queue="q", exchange="x", routing_key="k"),
    commands.Exchange.Declare(exchange="x", exchange_type="direct"),
    commands.Exchange.Bind(destination="d", source="s", routing_key="k"),
    commands.Exchange.Unbind(destination="d", source="s", routing_key="k"),
    commands.Basic.Consume(queue="q", consumer_tag="c"),
]


def frame_with_table(method: Any, table: bytes, trailing: bytes = b"") -> bytes:
    """``method`` with its (empty) arguments table replaced by the raw ``table`` entries."""
    head = method.marshal()[:-4]  # every argument before the table
    payload = struct.pack(">I", method.index) + head + struct.pack(">I", len(table)) + table + trailing
    return raw_frame(1, 1, payload)


def close_after(data: bytes) -> tuple[list[Any], Any]:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(data, 0.0)
    return events, conn.data_to_send()


def long_string_overrunning_the_table() -> bytes:
    # "k" => long string claiming 100 bytes, the table holding 3 of them
    return b"\x01kS" + struct.pack(">I", 100) + b"abc"


@pytest.mark.parametrize("method", TABLE_METHODS, ids=lambda m: m.name)
def test_long_string_longer_than_its_table_is_a_syntax_error(method: Any) -> None:
    # bytes after the table: pamqp read the string's tail from them
    events, output = close_after(frame_with_table(method, long_string_overrunning_the_table(), b"z" * 200))
    assert [type(e) for e in events] == [ev.ConnectionProtocolError]
    close = close_of(output)
    assert close.reply_code == 502
    assert close.reply_text == f"SYNTAX_ERROR - cannot decode {method.name} arguments"
    assert (close.class_id, close.method_id) == (method.index >> 16, method.index & 0xFFFF)


def test_long_string_longer_than_the_frame_is_a_syntax_error() -> None:
    events, output = close_after(frame_with_table(TABLE_METHODS[0], long_string_overrunning_the_table()))
    assert [type(e) for e in events] == [ev.ConnectionProtocolError]
    assert close_of(output).reply_code == 502


# One entry of every value type a table may hold, variable-sized ones included.
EVERY_KIND: dict[str, Any] = {
    "long-string": "value",
    "table": {"inner": "x", "n": 1},
    "array": [1, "two", {"three": 3}],
    "bytes": bytearray(b"\x00\xff"),
    "int": 2**40,
    "small": 7,
    "bool": True,
    "float": 1.5,
    "decimal": decimal.Decimal("1.25"),
    "time": datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
    "void": None,
}


def entries_and_boundaries(table: dict[str, Any]) -> tuple[bytes, set[int]]:
    """The encoded entries of ``table`` (without its length) and the offsets between them."""
    raw = b""
    boundaries = {0}
    for key, value in table.items():
        raw += encode.field_table({key: value})[4:]
        boundaries.add(len(raw))
    return raw, boundaries


def test_the_full_table_of_every_kind_is_accepted() -> None:
    raw, _ = entries_and_boundaries(EVERY_KIND)
    events, _ = close_after(frame_with_table(TABLE_METHODS[0], raw))
    assert [type(e) for e in events] == [ev.MethodReceived]
    assert events[0].method.arguments == EVERY_KIND


def test_a_table_cut_inside_any_entry_is_a_syntax_error() -> None:
    # The table's own length is consistent; an entry inside it (key, long string, nested
    # table, array, byte array, fixed-size value) is cut short. Trailing bytes in the frame
    # must not be read as the rest of it.
    raw, boundaries = entries_and_boundaries(EVERY_KIND)
    cuts = [cut for cut in range(1, len(raw)) if cut not in boundaries]
    assert len(cuts) > 100
    accepted = []
    for cut in cuts:
        events, output = close_after(frame_with_table(TABLE_METHODS[0], raw[:cut], raw[cut:] + b"\x00" * 16))
        if [type(e) for e in events] != [ev.ConnectionProtocolError] or close_of(output).reply_code != 502:
            accepted.append((cut, raw[:cut]))
    assert accepted == []


def test_a_table_cut_between_entries_is_the_entries_before_the_cut() -> None:
    raw, boundaries = entries_and_boundaries(EVERY_KIND)
    for count, cut in enumerate(sorted(boundaries)):
        events, _ = close_after(frame_with_table(TABLE_METHODS[0], raw[:cut], raw[cut:]))
        assert [type(e) for e in events] == [ev.MethodReceived]
        assert events[0].method.arguments == dict(list(EVERY_KIND.items())[:count])


@pytest.mark.parametrize("kind", ["S", "F", "A", "x"])
def test_a_nested_value_longer_than_its_enclosing_value_is_a_syntax_error(kind: str) -> None:
    # the outer table's length is right; the inner value claims 10 more bytes than it holds
    inner = kind.encode() + struct.pack(">I", 10) + b"\x00" * 4
    nested = b"\x01kF" + struct.pack(">I", 1 + 1 + len(inner)) + b"\x01i" + inner
    events, output = close_after(frame_with_table(TABLE_METHODS[0], nested, b"\x00" * 64))
    assert [type(e) for e in events] == [ev.ConnectionProtocolError]
    assert close_of(output).reply_code == 502


@pytest.mark.parametrize("method", TABLE_METHODS, ids=lambda m: m.name)
def test_short_strings_cut_short_are_a_syntax_error(method: Any) -> None:
    # the first short string claims 200 bytes, then the frame ends
    head = method.marshal()
    ticket = 2 if "ticket" in method.__slots__ else 0
    payload = struct.pack(">I", method.index) + head[:ticket] + b"\xc8" + b"abc"
    events, output = close_after(raw_frame(1, 1, payload))
    assert [type(e) for e in events] == [ev.ConnectionProtocolError]
    assert close_of(output).reply_code == 502


# ---- the strict decoder decodes well-formed methods as pamqp does --------------------------

shortstrs = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
small_tables = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.none(), st.booleans(), st.integers(-(2**31), 2**31 - 1), st.text(max_size=10)),
    max_size=4,
)


def _value_for(kind: str, draw: Any) -> Any:
    if kind == "shortstr":
        return draw(shortstrs)
    if kind == "longstr":
        return draw(st.text(max_size=40))
    if kind == "table":
        return draw(small_tables)
    if kind == "bit":
        return draw(st.booleans())
    if kind == "octet":
        return draw(st.integers(0, 255))
    if kind == "short":
        return draw(st.integers(0, 2**16 - 1))
    if kind == "long":
        return draw(st.integers(0, 2**32 - 1))
    assert kind == "longlong", kind
    return draw(st.integers(0, 2**63 - 1))


@st.composite
def methods(draw: Any) -> Any:
    cls = draw(st.sampled_from(sorted(commands.INDEX_MAPPING.values(), key=lambda c: c.index)))
    method = cls.__new__(cls)
    for name in cls.__slots__:
        setattr(method, name, _value_for(cls.amqp_type(name), draw))
    return method


def _marshal(method: Any) -> bytes:
    """pamqp's encoding, without its name validation (not the subject here)."""
    saved = type(method).validate
    type(method).validate = lambda self: None
    try:
        return method.marshal()
    finally:
        type(method).validate = saved


@settings(max_examples=400, deadline=2000)
@given(method=methods())
def test_the_strict_decoder_agrees_with_pamqp_on_well_formed_methods(method: Any) -> None:
    data = _marshal(method)
    ours = codec.parse_method(method.index, data)
    theirs = type(method).__new__(type(method))
    theirs.unmarshal(data)
    assert type(ours) is type(theirs)
    assert {name: getattr(ours, name) for name in ours.__slots__} == {
        name: getattr(theirs, name) for name in theirs.__slots__
    }


@settings(max_examples=400, deadline=2000)
@given(method=methods(), data=st.data())
def test_every_truncation_of_a_method_is_refused(method: Any, data: Any) -> None:
    raw = _marshal(method)
    if not raw:
        return  # a method without arguments cannot be cut
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ValueError):
        codec.parse_method(method.index, raw[:cut])
