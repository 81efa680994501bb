"""Shared builders for broker unit tests."""

from __future__ import annotations

from typing import Any

from warren.broker.message import Message


def msg(
    body: bytes = b"x",
    exchange: str = "",
    routing_key: str = "q",
    **props: Any,
) -> Message:
    return Message.from_publish(exchange, routing_key, body, None, props)
