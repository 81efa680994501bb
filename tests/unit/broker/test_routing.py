from __future__ import annotations

import pytest

from warren.broker.routing import DirectTable, HeadersTable, TopicTable
from warren.errors import AMQPError, ReplyCode

Q1, Q2, Q3 = ("queue", "q1"), ("queue", "q2"), ("queue", "q3")


def topic(*bindings: tuple[str, tuple[str, str]]) -> TopicTable:
    table = TopicTable()
    for key, dest in bindings:
        table.add(key, dest, {})
    return table


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("a.*", "a.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#", "", True),
        ("#", "anything.at.all", True),
        ("#.c", "c", True),
        ("#.c", "a.b.c", True),
        ("#.c", "a.b.d", False),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
        ("a.#.#.c", "a.c", True),
        ("*", "", True),  # "" is one empty word, as in RabbitMQ
        ("*.*", "a", False),
        ("a.b", "a.b.c", False),
        ("#.#.#.#.x", "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p", False),
    ],
)
def test_topic_patterns(pattern: str, key: str, matches: bool) -> None:
    assert (Q1 in set(topic((pattern, Q1)).match([key], None))) is matches


def test_topic_routes_each_destination_once_and_unbind_keeps_other_patterns() -> None:
    table = topic(("a.*", Q1), ("#", Q1), ("a.b", Q2))
    assert list(table.match(["a.b"], None)) in ([Q1, Q2], [Q2, Q1])
    table.remove("#", Q1, {})
    assert set(table.match(["a.b"], None)) == {Q1, Q2}
    table.remove("a.*", Q1, {})
    assert set(table.match(["a.b"], None)) == {Q2}
    table.remove("a.b", Q2, {})
    assert set(table.match(["a.b"], None)) == set()
    assert not table._root.children  # pruned


def test_direct_duplicate_bindings_with_different_arguments_count_separately() -> None:
    table = DirectTable()
    table.add("k", Q1, {"a": 1})
    table.add("k", Q1, {"a": 2})
    table.remove("k", Q1, {"a": 1})
    assert set(table.match(["k"], None)) == {Q1}
    assert set(table.match(["k", "other"], None)) == {Q1}


def headers(mode: str | None, **args: object) -> HeadersTable:
    table = HeadersTable()
    arguments = dict(args)
    if mode is not None:
        arguments["x-match"] = mode
    table.add("", Q1, arguments)
    return table


@pytest.mark.parametrize(
    ("mode", "binding", "message", "matches"),
    [
        (None, {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, True),  # all is the default
        ("all", {"a": 1, "b": 2}, {"a": 1}, False),
        ("all", {"a": 1}, {"a": 2}, False),
        ("any", {"a": 1, "b": 2}, {"b": 2}, True),
        ("any", {"a": 1, "b": 2}, {"c": 2}, False),
        ("any", {}, {"c": 2}, False),
        ("all", {}, {}, True),
        ("all", {"x-k": 1}, {}, True),  # x- binding args are ignored by all/any
        ("all-with-x", {"x-k": 1}, {}, False),
        ("all-with-x", {"x-k": 1}, {"x-k": 1}, True),
        ("any-with-x", {"x-k": 1, "a": 9}, {"x-k": 1}, True),
        ("all", {"a": None}, {"a": "anything"}, True),  # void binding value: presence only
    ],
)
def test_headers_matching(mode: str | None, binding: dict, message: dict, matches: bool) -> None:
    assert (Q1 in set(headers(mode, **binding).match([""], message))) is matches


def test_headers_invalid_x_match_is_406() -> None:
    with pytest.raises(AMQPError) as info:
        headers("some")
    assert info.value.code == ReplyCode.PRECONDITION_FAILED
    assert info.value.text == 'Invalid x-match field value <<"some">>; expected all, any, all-with-x, or any-with-x'
    with pytest.raises(AMQPError) as info:
        headers(1)  # type: ignore[arg-type]
    assert info.value.text == "Invalid x-match field type long (value 1); expected longstr"
