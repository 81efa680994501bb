"""Queue and exchange names, routing keys and consumer tags: any UTF-8 up to 255 bytes, in
every method a client sends or the server replies with (RabbitMQ's rule, not the spec's
regex that pamqp applies)."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands

from tests.unit.amqp.wire import methods, open_channel, open_connection, raw_frame
from warren.amqp import codec
from warren.amqp import events as ev
from warren.amqp.names import NAMED_METHODS

NAME_FIELDS = ("queue", "exchange", "routing_key", "consumer_tag", "destination", "source")
NAMES = ["é", "очередь", "a*b", "名前 with spaces & [brackets]", "é" * 127 + "a", "€" * 85]
_DEFAULTS = {"shortstr": "", "longstr": "", "table": {}, "bit": False, "octet": 0, "short": 0,
             "long": 0, "longlong": 0, "timestamp": 0}


def named_fields() -> list[tuple[type, str]]:
    return [(cls, field) for cls in sorted(commands.INDEX_MAPPING.values(), key=lambda c: c.index)
            for field in NAME_FIELDS if field in cls.__slots__]


def complete(cls: type, **values: Any) -> Any:
    """An instance of ``cls`` with every argument set (pamqp cannot marshal None)."""
    method = cls(**values)
    for name in cls.__slots__:
        if getattr(method, name) is None:
            setattr(method, name, _DEFAULTS[cls.amqp_type(name)])
    if "ticket" in cls.__slots__:
        method.ticket = 0
    return method


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
@pytest.mark.parametrize(("cls", "field"), named_fields(), ids=lambda x: getattr(x, "name", x))
def test_any_utf8_name_builds_encodes_and_decodes(cls: type, field: str, name: str) -> None:
    assert len(name.encode()) <= 255
    method = complete(cls, **{field: name})  # pamqp validates here ...
    data = method.marshal()  # ... and here
    assert getattr(codec.parse_method(cls.index, data), field) == name


@pytest.mark.parametrize(("cls", "field"), named_fields(), ids=lambda x: getattr(x, "name", x))
def test_a_name_over_255_bytes_cannot_be_built_or_encoded(cls: type, field: str) -> None:
    # 128 two-byte characters: 256 bytes, though only 128 characters (pamqp counted those)
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        complete(cls, **{field: "é" * 128}).marshal()


def test_the_ticket_must_still_be_zero() -> None:
    with pytest.raises(ValueError, match="ticket"):
        commands.Queue.Declare(ticket=1, queue="q")


def test_every_method_pamqp_validates_names_in_is_relaxed() -> None:
    # a pamqp upgrade that validates names in another class must be caught here
    for cls, field in named_fields():
        try:
            complete(cls, **{field: "é*"}).marshal()
        except ValueError as error:
            pytest.fail(f"{cls.name}.{field}: {error} (add it to NAMED_METHODS)")
    assert all(cls in NAMED_METHODS for cls in (commands.Queue.DeclareOk, commands.Basic.Deliver))


def test_declare_ok_for_a_non_ascii_queue_is_sent() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(raw_frame(1, 1, b"\x00\x32\x00\x0a" + complete(
        commands.Queue.Declare, queue="очередь").marshal()), 0.0)
    assert [type(e) for e in events] == [ev.MethodReceived]
    assert events[0].method.queue == "очередь"
    conn.send_method(1, commands.Queue.DeclareOk(queue="очередь", message_count=0, consumer_count=0))
    sent = methods(conn.data_to_send())
    assert [type(m.obj) for m in sent] == [commands.Queue.DeclareOk]
    assert sent[0].queue == "очередь"


def test_deliver_get_ok_and_return_carry_any_utf8_name() -> None:
    name = "€" * 85  # 255 bytes
    out: list[bytes] = []
    codec.encode_deliver(out, 1, 131072, "ctag-ü*", 1, False, name, "rk-ü*", b"\x00\x00", b"x")
    codec.encode_get_ok(out, 1, 131072, 2, True, "", name, 0, b"\x00\x00", b"y")
    codec.encode_return(out, 1, 131072, 312, "NO_ROUTE", name, name, b"\x00\x00", b"z")
    sent = [m for m in methods(b"".join(out)) if isinstance(m.obj, commands.Basic.Deliver
                                                           | commands.Basic.GetOk | commands.Basic.Return)]
    assert [(m.exchange, m.routing_key) for m in sent] == [(name, "rk-ü*"), ("", name), (name, name)]
    assert sent[0].consumer_tag == "ctag-ü*"
