"""Exchanges and their bindings.

``Exchange(name, type, durable, auto_delete, internal, arguments)`` owns the bindings for
which it is the source and a routing table for its type (see ``routing``).
``exchange.route(keys, headers)`` returns the destinations ``("queue"|"exchange", name)`` of
one hop; ``VirtualHost`` follows exchange-to-exchange hops and alternate exchanges.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from warren.broker.routing import Destination, Table, args_key, new_table

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


@dataclass(frozen=True, slots=True)
class Binding:
    source: str
    destination_kind: str  # "queue" or "exchange"
    destination: str
    routing_key: str
    arguments: dict[str, Any] = field(hash=False, compare=False)

    @property
    def identity(self) -> tuple[str, str, str, Hashable]:
        return (self.destination_kind, self.destination, self.routing_key, args_key(self.arguments))

    def as_dict(self, vhost: str) -> dict[str, Any]:
        """The management API's shape."""
        return {
            "source": self.source,
            "vhost": vhost,
            "destination": self.destination,
            "destination_type": self.destination_kind,
            "routing_key": self.routing_key,
            "arguments": self.arguments,
        }


@dataclass(eq=False)
class Exchange:
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    table: Table = field(init=False)
    bindings: dict[tuple[str, str, str, Hashable], Binding] = field(init=False, default_factory=dict)
    policy: str | None = field(init=False, default=None)
    policy_alternate_exchange: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.table = new_table(self.type)

    @property
    def alternate_exchange(self) -> str | None:
        """The exchange's own argument wins over a policy's, as in RabbitMQ."""
        value = self.arguments.get("alternate-exchange")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value if isinstance(value, str) else self.policy_alternate_exchange

    def add_binding(self, binding: Binding) -> bool:
        """False when the identical binding exists (binding is idempotent)."""
        ident = binding.identity
        if ident in self.bindings:
            return False
        dest = (binding.destination_kind, binding.destination)
        self.table.add(binding.routing_key, dest, binding.arguments)
        self.bindings[ident] = binding
        return True

    def remove_binding(self, binding: Binding) -> bool:
        existing = self.bindings.pop(binding.identity, None)
        if existing is None:
            return False
        self.table.remove(existing.routing_key, (existing.destination_kind, existing.destination), existing.arguments)
        return True

    def bindings_to(self, kind: str, name: str) -> list[Binding]:
        return [b for b in self.bindings.values() if b.destination_kind == kind and b.destination == name]

    def route(self, keys: list[str], headers: dict[str, Any] | None) -> Iterable[Destination]:
        return self.table.match(keys, headers)

    def as_dict(self, vhost: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "vhost": vhost,
            "type": self.type,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "internal": self.internal,
            "arguments": self.arguments,
            "policy": self.policy,
        }
