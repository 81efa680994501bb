"""Policies: operator-set queue settings matched by name pattern, as RabbitMQ's.

``Policy(name, pattern, apply_to, priority, definition)``; ``matching_policy(policies, kind,
name)`` picks the one policy that applies (highest priority; RabbitMQ applies one policy
per object); ``effective_queue_args(declared, policy)`` merges it with the queue's own
arguments: for message-ttl, expires, max-length, max-length-bytes and delivery-limit the
lower value wins; for dead-letter-exchange, dead-letter-routing-key and overflow the
queue's argument wins (rabbit_amqqueue_process's res_min / res_arg).
``validate_definition`` raises 406 with a message naming the bad key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from warren.broker.queue_args import OVERFLOW_MODES, QueueArgs
from warren.errors import precondition_failed

APPLY_TO = ("queues", "classic_queues", "quorum_queues", "exchanges", "all")
_KINDS = {"queue": ("queues", "classic_queues", "all"),  # a classic queue
          "quorum_queue": ("queues", "quorum_queues", "all"),
          "exchange": ("exchanges", "all")}

_MIN_WINS = {
    "message-ttl": "message_ttl",
    "expires": "expires",
    "max-length": "max_length",
    "max-length-bytes": "max_length_bytes",
    "delivery-limit": "delivery_limit",
}
_ARGUMENT_WINS = {
    "dead-letter-exchange": "dead_letter_exchange",
    "dead-letter-routing-key": "dead_letter_routing_key",
    "overflow": "overflow",
}
# Keys this broker knows; others (ha-mode, queue-mode, ...) are accepted and ignored.
_INT_KEYS = frozenset(_MIN_WINS)
_STR_KEYS = frozenset({*_ARGUMENT_WINS, "alternate-exchange"})


@dataclass(frozen=True)
class Policy:
    name: str
    pattern: str
    apply_to: str = "all"
    priority: int = 0
    definition: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.apply_to not in APPLY_TO:
            raise precondition_failed(f"'{self.apply_to}' is not a valid apply-to value; expected one of {', '.join(APPLY_TO)}")
        try:
            re.compile(self.pattern)
        except re.error as error:
            raise precondition_failed(f"invalid pattern '{self.pattern}' for policy '{self.name}': {error}") from None
        validate_definition(self.definition)

    def applies_to(self, kind: str, name: str) -> bool:
        """``kind``: "queue" (classic), "quorum_queue" or "exchange" (see ``queue_kind``)."""
        return self.apply_to in _KINDS[kind] and re.search(self.pattern, name) is not None

    def as_dict(self, vhost: str) -> dict[str, Any]:
        return {
            "vhost": vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to,
            "priority": self.priority,
            "definition": self.definition,
        }


def validate_definition(definition: dict[str, Any]) -> None:
    if not definition:
        raise precondition_failed("policy definition must not be empty")
    for key, value in definition.items():
        if key in _INT_KEYS and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise precondition_failed(f"policy key '{key}' must be a non-negative integer, got {value!r}")
        if key in _STR_KEYS and not isinstance(value, str):
            raise precondition_failed(f"policy key '{key}' must be a string, got {value!r}")
        if key in _STR_KEYS and len(value.encode("utf-8", "surrogatepass")) > 255:
            raise precondition_failed(f"policy key '{key}' is longer than 255 bytes (an AMQP short string)")
        if key == "overflow" and value not in OVERFLOW_MODES:
            raise precondition_failed(f"policy key 'overflow' must be one of {', '.join(OVERFLOW_MODES)}, got {value!r}")
        if key == "expires" and value == 0:
            raise precondition_failed("policy key 'expires' must be positive")


def matching_policy(policies: list[Policy] | Any, kind: str, name: str) -> Policy | None:
    best: Policy | None = None
    for policy in policies:
        if policy.applies_to(kind, name) and (
            best is None or (policy.priority, policy.name) > (best.priority, best.name)
        ):
            best = policy
    return best


def queue_kind(args: QueueArgs) -> str:
    """What ``Policy.applies_to`` calls a queue with these arguments."""
    return "quorum_queue" if args.queue_type == "quorum" else "queue"


def effective_queue_args(declared: QueueArgs, policy: Policy | None) -> QueueArgs:
    return args_with_definition(declared, policy.definition if policy is not None else None)


def args_with_definition(declared: QueueArgs, definition: dict[str, Any] | None) -> QueueArgs:
    """The queue's arguments under a policy's definition (a quorum queue's replicas take it
    from their log, so it is passed as data)."""
    if not definition:
        return declared
    changes: dict[str, Any] = {}
    for key, attr in _MIN_WINS.items():
        if key in definition:
            own = getattr(declared, attr)
            changes[attr] = definition[key] if own is None else min(own, definition[key])
    for key, attr in _ARGUMENT_WINS.items():
        if key in definition and _is_default(declared, attr):
            changes[attr] = definition[key]
    return replace(declared, **changes) if changes else declared


def _is_default(args: QueueArgs, attr: str) -> bool:
    default = QueueArgs()
    return getattr(args, attr) == getattr(default, attr)
