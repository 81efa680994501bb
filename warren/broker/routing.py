"""Matching of routing keys and headers against bindings: the per-type routing tables.

A *destination* is ``("queue", name)`` or ``("exchange", name)``. Each table keeps a count
per (key, destination) so that two bindings that differ only in their arguments (distinct
bindings in AMQP) route once and unbinding one of them keeps the other.

- ``DirectTable``: a dict lookup.
- ``FanoutTable``: every destination.
- ``TopicTable``: a trie over the dot-separated words; ``*`` matches one word, ``#`` zero or
  more. Matching visits each (trie node, word position) at most once, so patterns with many
  ``#`` stay linear in (nodes x words).
- ``HeadersTable``: x-match all / any / all-with-x / any-with-x, as RabbitMQ 3.10+.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from warren.broker.queue_args import amqp_type_name
from warren.errors import precondition_failed

Destination = tuple[str, str]


class DirectTable:
    def __init__(self) -> None:
        self._by_key: dict[str, dict[Destination, int]] = {}

    def add(self, key: str, dest: Destination, arguments: dict[str, Any]) -> None:
        dests = self._by_key.setdefault(key, {})
        dests[dest] = dests.get(dest, 0) + 1

    def remove(self, key: str, dest: Destination, arguments: dict[str, Any]) -> None:
        dests = self._by_key[key]
        dests[dest] -= 1
        if not dests[dest]:
            del dests[dest]
            if not dests:
                del self._by_key[key]

    def match(self, keys: list[str], headers: dict[str, Any] | None) -> Iterable[Destination]:
        if len(keys) == 1:
            return self._by_key.get(keys[0], ())
        found: dict[Destination, None] = {}
        for key in keys:
            found.update(dict.fromkeys(self._by_key.get(key, ())))
        return found


class FanoutTable:
    def __init__(self) -> None:
        self._dests: dict[Destination, int] = {}

    def add(self, key: str, dest: Destination, arguments: dict[str, Any]) -> None:
        self._dests[dest] = self._dests.get(dest, 0) + 1

    def remove(self, key: str, dest: Destination, arguments: dict[str, Any]) -> None:
        self._dests[dest] -= 1
        if not self._dests[dest]:
            del self._dests[dest]

    def match(self, keys: list[str], headers: dict[str, Any] | None) -> Iterable[Destination]:
        return self._dests


class _TrieNode:
    __slots__ = ("children", "dests")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode] = {}
        self.dests: dict[Destination, int] = {}


TOPIC_CACHE_SIZE = 4096  # routing keys whose match results a topic exchange remembers


class TopicTable:
    def __init__(self) -> None:
        self._root = _TrieNode()
        # routing key -> destinations; cleared whenever a binding changes
        self._cache: dict[str, tuple[Destination, ...]] = {}

    def add(self, key: str, dest: Destination, arguments: dict[str, Any]) -> None:
        self._cache.clear()
        node = self._root
        for word in key.split("."):
            node = node.children.setdefault(word, _TrieNode())
        node.dests[dest] = node.dests.get(dest, 0) + 1

    def remove(self, key: str, dest: Destination, arguments: dict[str, Any]) -> None:
        self._cache.clear()
        path = [self._root]
        words = key.split(".")
        for word in words:
            path.append(path[-1].children[word])
        leaf = path[-1]
        leaf.dests[dest] -= 1
        if not leaf.dests[dest]:
            del leaf.dests[dest]
        # prune empty branches so the trie does not grow with churn
        for depth in range(len(words), 0, -1):
            node = path[depth]
            if node.dests or node.children:
                break
            del path[depth - 1].children[words[depth - 1]]

    def match(self, keys: list[str], headers: dict[str, Any] | None) -> Iterable[Destination]:
        if len(keys) == 1:
            return self._match_cached(keys[0])
        found: dict[Destination, None] = {}
        for key in keys:
            found.update(dict.fromkeys(self._match_cached(key)))
        return found

    def _match_cached(self, key: str) -> tuple[Destination, ...]:
        cached = self._cache.get(key)
        if cached is None:
            found: dict[Destination, None] = {}
            self._match(key.split("."), found)
            cached = tuple(found)
            if len(self._cache) >= TOPIC_CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _match(self, words: list[str], found: dict[Destination, None]) -> None:
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[_TrieNode, int]] = [(self._root, 0)]
        count = len(words)
        while stack:
            node, i = stack.pop()
            mark = (id(node), i)
            if mark in seen:
                continue
            seen.add(mark)
            children = node.children
            hash_node = children.get("#")
            if i == count:
                found.update(dict.fromkeys(node.dests))
                if hash_node is not None:
                    stack.append((hash_node, i))
                continue
            word = words[i]
            exact = children.get(word)
            if exact is not None:
                stack.append((exact, i + 1))
            if word != "*":
                star = children.get("*")
                if star is not None:
                    stack.append((star, i + 1))
            if hash_node is not None:
                for j in range(i, count + 1):
                    stack.append((hash_node, j))


X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def headers_match_mode(arguments: dict[str, Any]) -> str:
    """The binding's x-match mode; an invalid value is a 406 as in RabbitMQ."""
    mode = arguments.get("x-match", "all")
    if isinstance(mode, bytes):
        mode = mode.decode("utf-8", "replace")
    if not isinstance(mode, str):
        shown = str(mode).lower() if isinstance(mode, bool) else mode
        raise precondition_failed(
            f"Invalid x-match field type {amqp_type_name(mode)} (value {shown}); expected longstr"
        )
    if mode not in X_MATCH_MODES:
        raise precondition_failed(
            f'Invalid x-match field value <<"{mode}">>; expected all, any, all-with-x, or any-with-x'
        )
    return mode


def headers_match(mode: str, arguments: dict[str, Any], headers: dict[str, Any] | None) -> bool:
    with_x = mode.endswith("-with-x")
    wants_all = mode.startswith("all")
    headers = headers or {}
    for name, expected in arguments.items():
        if name == "x-match" or (not with_x and name.startswith("x-")):
            continue
        present = name in headers
        # A binding argument of type void (None) asks only for the header's presence.
        matched = present and (expected is None or headers[name] == expected)
        if wants_all and not matched:
            return False
        if not wants_all and matched:
            return True
    return wants_all


class HeadersTable:
    def __init__(self) -> None:
        self._bindings: dict[tuple[Destination, Hashable], tuple[str, dict[str, Any], int]] = {}

    def add(self, key: str, dest: Destination, arguments: dict[str, Any]) -> None:
        mode = headers_match_mode(arguments)
        ident = (dest, args_key(arguments))
        _, _, count = self._bindings.get(ident, (mode, arguments, 0))
        self._bindings[ident] = (mode, arguments, count + 1)

    def remove(self, key: str, dest: Destination, arguments: dict[str, Any]) -> None:
        ident = (dest, args_key(arguments))
        mode, args, count = self._bindings[ident]
        if count > 1:
            self._bindings[ident] = (mode, args, count - 1)
        else:
            del self._bindings[ident]

    def match(self, keys: list[str], headers: dict[str, Any] | None) -> Iterable[Destination]:
        found: dict[Destination, None] = {}
        for (dest, _), (mode, arguments, _) in self._bindings.items():
            if dest not in found and headers_match(mode, arguments, headers):
                found[dest] = None
        return found


def args_key(value: Any) -> Hashable:
    """A hashable, order-independent form of a field table (binding identity)."""
    if isinstance(value, dict):
        return tuple(sorted((k, args_key(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("[", *(args_key(v) for v in value))
    if isinstance(value, bytearray):
        return bytes(value)
    return (type(value).__name__, value)


Table = DirectTable | FanoutTable | TopicTable | HeadersTable


def new_table(exchange_type: str) -> Table:
    tables: dict[str, type[Table]] = {
        "direct": DirectTable,
        "fanout": FanoutTable,
        "topic": TopicTable,
        "headers": HeadersTable,
    }
    return tables[exchange_type]()
