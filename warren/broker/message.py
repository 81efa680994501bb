"""A published message as the broker sees it, and the dead-letter rewrite of one.

``Message.from_publish(exchange, routing_key, body, properties, props)`` derives once what
routing and queues need (``persistent``, ``priority``, ``expiration_ms``, ``size``), so the
hot path never looks into ``props`` again. ``properties`` is the encoded property block as
the client sent it; it stays opaque here and is reused for deliveries. Whoever changes
``props`` sets ``properties = None`` so the session re-encodes it.

One ``Message`` object is shared by every queue it was routed to; queues never mutate it.
``body`` may be set to ``None`` by the persistence layer once the body lives in the store;
``seq`` is the store's sequence number (0 until stored).

``dead_lettered_copy(...)`` builds the message a queue dead-letters, with the ``x-death``
header written exactly as RabbitMQ 3.10 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from warren.errors import precondition_failed

# RabbitMQ's ?MAX_EXPIRY_TIMER: the largest TTL/expiry Erlang timers accept.
MAX_EXPIRY_MS = 4294967295


@dataclass(slots=True, eq=False)
class Message:
    exchange: str
    routing_key: str
    body: bytes | None
    properties: bytes | None  # encoded property block; None = re-encode from props
    props: dict[str, Any]  # decoded properties, pamqp names; headers may be None
    persistent: bool = False  # delivery_mode == 2
    priority: int | None = None
    expiration_ms: int | None = None  # from the 'expiration' property
    size: int = 0  # body bytes
    seq: int = 0  # store sequence number, 0 until persisted

    @classmethod
    def from_publish(
        cls,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: bytes | None,
        props: dict[str, Any],
    ) -> Message:
        """Derive the routing/queueing facts from the decoded properties.

        An invalid ``expiration`` is a 406, with RabbitMQ's text.
        """
        priority = props.get("priority")
        expiration = props.get("expiration")
        return cls(
            exchange,
            routing_key,
            body,
            properties,
            props,
            props.get("delivery_mode") == 2,
            priority if isinstance(priority, int) else None,
            parse_expiration(expiration) if expiration is not None else None,
            len(body),
        )

    @property
    def headers(self) -> dict[str, Any] | None:
        headers = self.props.get("headers")
        return headers if isinstance(headers, dict) else None


def parse_expiration(value: Any) -> int:
    """The per-message TTL in ms from the 'expiration' shortstr (rabbit_basic:parse_expiration)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    digits = text.lstrip()
    sign = ""
    if digits[:1] in ("-", "+"):
        sign, digits = digits[0], digits[1:]
    end = 0
    while end < len(digits) and digits[end].isdigit():
        end += 1
    if end == 0:
        raise precondition_failed(f"invalid expiration '{text}': no_integer")
    if end < len(digits):
        raise precondition_failed(f"invalid expiration '{text}': {{leftover_string,\"{digits[end:]}\"}}")
    number = int(sign + digits[:end])
    if number < 0:
        raise precondition_failed(f"invalid expiration '{text}': {{value_negative,{number}}}")
    if number > MAX_EXPIRY_MS:
        raise precondition_failed(f"invalid expiration '{text}': {{value_too_big,{number}}}")
    return number


def routing_keys_of(message: Message) -> list[str]:
    """The routing key plus the CC header's keys (sender-selected distribution)."""
    keys = [message.routing_key]
    headers = message.headers
    if headers:
        cc = headers.get("CC")
        if isinstance(cc, list):
            keys.extend(k.decode() if isinstance(k, bytes) else str(k) for k in cc)
    return keys


def dead_lettered_copy(
    message: Message,
    reason: str,
    queue: str,
    now_ms: int,
    dead_letter_exchange: str,
    dead_letter_routing_key: str | None,
) -> Message:
    """The copy RabbitMQ 3.10 publishes to the DLX: x-death updated, expiration removed.

    An existing x-death entry for the same queue, reason and exchange has its count increased
    and is moved to the front; otherwise a new entry goes first. ``x-first-death-*`` are set
    once. Entry keys are sorted, as rabbit_dead_letter does, so the encoding matches.
    """
    props = dict(message.props)
    headers = dict(props.get("headers") or {})
    original_expiration = props.pop("expiration", None)
    routing_keys = routing_keys_of(message)
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
    previous = None
    for index, death in enumerate(deaths):
        if (death.get("queue"), death.get("reason"), death.get("exchange")) == (queue, reason, message.exchange):
            previous = deaths.pop(index)
            break
    if previous is not None:
        entry = dict(previous)
        entry["count"] = int(entry.get("count", 0)) + 1
    else:
        entry = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": datetime.fromtimestamp(now_ms // 1000, tz=UTC),
            "exchange": message.exchange,
            "routing-keys": routing_keys,
        }
        if original_expiration is not None:
            entry["original-expiration"] = original_expiration
    headers["x-death"] = [dict(sorted(entry.items())), *deaths]  # RabbitMQ sorts the table's keys
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-exchange", message.exchange)
    if dead_letter_routing_key is not None:
        headers.pop("CC", None)  # RabbitMQ drops CC when a dead-letter routing key replaces the keys
    props["headers"] = headers
    return Message(
        dead_letter_exchange,
        dead_letter_routing_key if dead_letter_routing_key is not None else message.routing_key,
        message.body,
        None,
        props,
        message.persistent,
        message.priority,
        None,
        message.size,
    )


def death_history(message: Message) -> list[tuple[str, str]]:
    """(queue, reason) of each x-death entry, most recent first."""
    headers = message.headers
    deaths = headers.get("x-death") if headers else None
    if not isinstance(deaths, list):
        return []
    return [(str(d.get("queue")), str(d.get("reason"))) for d in deaths if isinstance(d, dict)]
