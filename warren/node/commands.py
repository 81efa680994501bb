"""The one write path for definitions: AMQP sessions and the HTTP API submit commands here.

A submitter hands a :class:`~warren.cluster.definitions.Command` and a ``done`` callback;
``done`` hears the :class:`Outcome` once the change is durable -- written and fsynced on a
standalone node, committed by the metadata group in a cluster -- or refused. Nothing replies
before that, and nothing changes the broker's definitions by another path.

``done`` may run before ``submit`` returns (a standalone node applies at once) or later (a
cluster applies on commit): callers must work either way. A session holds the channel's
next methods until its command's outcome is known, as a RabbitMQ channel process does.

Reads that must not be stale (a passive declare after a declare on another node) go through
:meth:`~warren.cluster.definitions.CommandRunner.barrier`: ``done`` runs once everything committed before the call is
applied here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from warren.cluster.definitions import Command, Done, Outcome
from warren.errors import AMQPError

if TYPE_CHECKING:
    from warren.node.node import Node


class LocalCommands:
    """A standalone node: apply now, write and fsync the definitions, then answer."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def submit(self, command: Command, done: Done) -> None:
        node = self.node
        try:
            applied = node.apply_definition(command)
        except AMQPError as error:
            done(Outcome(error=error))
            return
        done(Outcome(applied.value))
        node.follow_up(applied)  # after the reply: RabbitMQ sends delete-ok before the cancels

    def barrier(self, done: Done) -> None:
        done(Outcome())
