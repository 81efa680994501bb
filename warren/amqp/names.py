"""Names in pamqp's method classes: any UTF-8 up to 255 bytes, as RabbitMQ accepts.

pamqp validates queue and exchange names against the 0-9-1 spec's domain regex
(``^[a-zA-Z0-9-_.:@#,/+ ]*$``) and character counts (127 for exchanges) when a method is
built and again when it is marshalled. RabbitMQ ignores that part of the spec: a name is a
short string, any UTF-8 of at most 255 bytes. The session builds replies such as
queue.declare-ok with pamqp's classes, so a queue named ``é`` was created and then the
reply raised (541). :func:`relax_name_validation` gives every method class with a name
argument RabbitMQ's rule as its ``validate``; ``warren.amqp`` calls it on import, before any
method is built. (Decoding never validated; deliver, get-ok and return are encoded by hand.)

It changes pamqp for the whole process (a pamqp client in it, such as ``warren bench``'s,
gets RabbitMQ's rule too): that is the point, one place instead of every construction site.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pamqp import base, commands

SHORTSTR_MAX_BYTES = 255
_ALWAYS_SHORT = SHORTSTR_MAX_BYTES // 4  # no str this long can exceed 255 bytes in UTF-8

# The arguments that carry names: queues, exchanges (source and destination of an
# exchange binding), routing keys, consumer tags.
NAME_ARGUMENTS = frozenset(
    {"queue", "exchange", "destination", "source", "routing_key", "consumer_tag"}
)
# Every method with such an argument; pamqp checks the names of most against the regex.
_METHODS: list[type[base.Frame]] = [cls for _, cls in sorted(commands.INDEX_MAPPING.items())]
NAMED_METHODS: tuple[type[base.Frame], ...] = tuple(
    cls for cls in _METHODS if NAME_ARGUMENTS.intersection(cls.__slots__)
)


def check_shortstr(name: str, value: str) -> None:
    """ValueError unless ``value`` fits a short string (at most 255 bytes of UTF-8)."""
    if len(value) > _ALWAYS_SHORT and len(value.encode()) > SHORTSTR_MAX_BYTES:
        raise ValueError(f"{name} is longer than {SHORTSTR_MAX_BYTES} bytes")


def _validator(cls: type[base.Frame]) -> Callable[[Any], None]:
    slots: list[str] = cls.__slots__
    shortstrs = tuple(name for name in slots if getattr(cls, "_" + name) == "shortstr")
    has_ticket = "ticket" in slots

    def validate(self: Any) -> None:
        """RabbitMQ's rule: every short string at most 255 bytes; the ticket 0 (pamqp's)."""
        if has_ticket and self.ticket is not None and self.ticket != 0:
            raise ValueError("ticket must be 0")
        for name in shortstrs:
            value = getattr(self, name, None)
            if type(value) is str:  # other types fail in pamqp's encoder, as before
                check_shortstr(name, value)

    return validate


def relax_name_validation() -> None:
    """Give every method in NAMED_METHODS RabbitMQ's name rule instead of pamqp's. Idempotent."""
    for cls in NAMED_METHODS:
        cls.validate = _validator(cls)  # type: ignore[assignment]
