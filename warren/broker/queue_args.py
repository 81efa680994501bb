"""Queue arguments: validation with RabbitMQ's error texts, and the parsed form queues use.

``parse_queue_arguments(arguments, queue_name, vhost) -> QueueArgs`` raises 406
``invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}`` (the Erlang
terms RabbitMQ prints). Unknown ``x-`` arguments are kept but ignored, as RabbitMQ does.
``describe_value`` renders a value with its AMQP type for the "inequivalent arg" texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warren.broker.message import MAX_EXPIRY_MS
from warren.errors import precondition_failed

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
MAX_SUPPORTED_PRIORITY = 255

# Arguments RabbitMQ compares when a queue is redeclared (others are not checked).
EQUIVALENCE_CHECKED = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-type",
    "x-single-active-consumer",
    "x-queue-mode",
)


@dataclass(frozen=True, slots=True)
class QueueArgs:
    message_ttl: int | None = None
    expires: int | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_priority: int | None = None
    single_active_consumer: bool = False
    delivery_limit: int | None = None  # quorum queues (x-delivery-limit or policy); <0: none
    queue_type: str = "classic"
    initial_group_size: int | None = None  # quorum queues: x-quorum-initial-group-size


def amqp_type_name(value: Any) -> str:
    """The AMQP field type RabbitMQ would name for a decoded value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, str | bytes):
        return "longstr"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "void"
    return type(value).__name__


def describe_value(value: Any) -> str:
    if value is None:
        return "none"
    shown = str(value).lower() if isinstance(value, bool) else _text(value)
    return f"the value '{shown}' of type '{amqp_type_name(value)}'"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _Invalid(Exception):
    def __init__(self, term: str) -> None:
        self.term = term


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f'"expected integer, got {amqp_type_name(value)}"')
    return value


def _non_negative(value: Any) -> int:
    number = _int(value)
    if number < 0:
        raise _Invalid(f"{{value_negative,{number}}}")
    return number


def _positive(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise _Invalid(f"{{value_zero_or_less,{number}}}" if number < 0 else "{value_zero,0}")
    return number


def _ttl(value: Any) -> int:
    number = _non_negative(value)
    if number > MAX_EXPIRY_MS:
        raise _Invalid(f"{{value_too_big,{number}}}")
    return number


def _expires(value: Any) -> int:
    number = _int(value)
    if number == 0:
        raise _Invalid("{value_zero,0}")
    if number < 0:
        raise _Invalid(f"{{value_negative,{number}}}")
    if number > MAX_EXPIRY_MS:
        raise _Invalid(f"{{value_too_big,{number}}}")
    return number


def _string(value: Any) -> str:
    if not isinstance(value, str | bytes):
        raise _Invalid(f"{{unacceptable_type,{amqp_type_name(value)}}}")
    return _text(value)


SHORT_STRING_MAX_BYTES = 255  # AMQP's shortstr: names and routing keys


def _short_string(value: Any) -> str:
    """An exchange name or routing key: it will travel in a deliver, so at most 255 bytes."""
    text = _string(value)
    if len(text.encode("utf-8", "surrogatepass")) > SHORT_STRING_MAX_BYTES:
        raise _Invalid("{too_long,255}")
    return text


def check_short_string(kind: str, value: str, vhost: str) -> None:
    """Names that AMQP carries as short strings may not exceed 255 bytes (the HTTP API and
    policies can pass longer ones; a delivery could then not be encoded)."""
    if len(value.encode("utf-8", "surrogatepass")) > SHORT_STRING_MAX_BYTES:
        raise precondition_failed(
            f"{kind} '{value[:40]}...' in vhost '{vhost}' is longer than {SHORT_STRING_MAX_BYTES} bytes")


def _overflow(value: Any) -> str:
    text = _string(value)
    if text not in OVERFLOW_MODES:
        raise _Invalid("invalid_overflow")
    return text


def _max_priority(value: Any) -> int:
    number = _non_negative(value)
    if number > MAX_SUPPORTED_PRIORITY:
        raise _Invalid(f"{{max_value_exceeded,{number}}}")
    return number


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"{{unacceptable_type,{amqp_type_name(value)}}}")
    return value


def _queue_type(value: Any) -> str:
    text = _string(value)
    if text not in ("classic", "quorum", "stream"):
        raise _Invalid(f"\"unsupported queue type '{text}'\"")
    return text


_PARSERS = {
    "x-message-ttl": ("message_ttl", _ttl),
    "x-expires": ("expires", _expires),
    "x-max-length": ("max_length", _non_negative),
    "x-max-length-bytes": ("max_length_bytes", _non_negative),
    "x-overflow": ("overflow", _overflow),
    "x-dead-letter-exchange": ("dead_letter_exchange", _short_string),
    "x-dead-letter-routing-key": ("dead_letter_routing_key", _short_string),
    "x-max-priority": ("max_priority", _max_priority),
    "x-single-active-consumer": ("single_active_consumer", _bool),
    "x-queue-type": ("queue_type", _queue_type),
    "x-delivery-limit": ("delivery_limit", _int),
    "x-quorum-initial-group-size": ("initial_group_size", _positive),
}


def resource_name(kind: str, name: str, vhost: str) -> str:
    """RabbitMQ's rabbit_misc:rs/1 rendering: ``queue 'q' in vhost '/'``."""
    return f"{kind} '{name}' in vhost '{vhost}'"


def parse_queue_arguments(arguments: dict[str, Any], queue_name: str, vhost: str) -> QueueArgs:
    values: dict[str, Any] = {}
    where = resource_name("queue", queue_name, vhost)
    for key, (field_name, parse) in _PARSERS.items():
        if key not in arguments:
            continue
        try:
            values[field_name] = parse(arguments[key])
        except _Invalid as invalid:
            raise precondition_failed(f"invalid arg '{key}' for {where}: {invalid.term}") from None
    if values.get("queue_type") == "stream":
        raise precondition_failed(f"invalid arg 'x-queue-type' for {where}: stream queues are not supported by Warren")
    if "dead_letter_routing_key" in values and "dead_letter_exchange" not in values:
        raise precondition_failed(f"invalid arg 'x-dead-letter-routing-key' for {where}: routing_key_but_no_dlx_defined")
    return QueueArgs(**values)


def check_equivalent_arguments(
    current: dict[str, Any], received: dict[str, Any], queue_name: str, vhost: str
) -> None:
    """406 ``inequivalent arg`` when a redeclare changes an argument RabbitMQ compares."""
    for key in EQUIVALENCE_CHECKED:
        old, new = current.get(key), received.get(key)
        if old == new and type(old) is type(new):
            continue
        if isinstance(old, str | bytes) and isinstance(new, str | bytes) and _text(old) == _text(new):
            continue
        raise precondition_failed(
            f"inequivalent arg '{key}' for {resource_name('queue', queue_name, vhost)}: "
            f"received {describe_value(new)} but current is {describe_value(old)}"
        )
