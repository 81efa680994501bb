"""A clustered node's definition commands: entries of the metadata Raft group.

``submit`` proposes ``[Op.DEFINITION, origin, correlation, command]`` to the metadata group;
every member applies the committed entry to its own broker model (``apply_definition``, the
state machine's hook), and the member that proposed it answers its waiting submitter then,
matched by (origin, correlation). ``origin`` is random per boot, so an entry proposed before
a restart never answers a submitter after it. A proposal that cannot commit (no quorum, no
leader) fails the way RabbitMQ's Khepri-backed declare does: a 541 naming the operation.

The ``barrier`` for reads waits for the group's read index: everything committed before the
call is applied here when ``done`` runs (a passive declare after a declare on another node).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, Protocol

import msgpack

from warren.cluster.definitions import (
    Command,
    Done,
    Outcome,
    decode_command,
    describe,
    encode_command,
)
from warren.cluster.ops import Op
from warren.errors import AMQPError, ReplyCode, UnstorableValue, WarrenError, precondition_failed

log = logging.getLogger("warren.cluster")


class MetadataGroup(Protocol):
    async def propose(self, entry: bytes) -> int: ...

    async def read_barrier(self) -> None: ...


def unavailable(what: str, reason: Exception, change: bool = True, disk_full: bool = False) -> AMQPError:
    # A change that timed out may be in the leader's log: it can still commit once a
    # majority is back, as with RabbitMQ's Khepri. Say so rather than promise it failed.
    # The reply text is a short string (255 bytes): the cause goes to the log.
    log.warning("metadata operation failed: %s: %s", what, reason)
    if disk_full:  # this node cannot store the entry: the cause is here, not a lost majority
        later = "; it may still take effect once the disk has room" if change else ""
        return AMQPError(ReplyCode.INTERNAL_ERROR, f"failed to {what} because this node's disk is full "
                                                   f"(disk alarm){later}")
    later = "; it may still take effect once a majority of the cluster is reachable" if change else ""
    return AMQPError(ReplyCode.INTERNAL_ERROR, f"failed to {what} because the operation timed out{later}")


class ReplicatedCommands:
    """``CommandRunner`` and ``DefinitionsApplier`` of a clustered node."""

    def __init__(self, node: Any, group: MetadataGroup | None = None) -> None:
        self.node = node
        self.group = group  # set once the cluster runtime exists (it needs this applier first)
        self.origin = secrets.randbits(63)
        self._next_correlation = 1
        self._waiting: dict[int, Done] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- CommandRunner -------------------------------------------------------------------

    def submit(self, command: Command, done: Done) -> None:
        try:
            data = encode_command(command)
        except UnstorableValue as exc:
            done(Outcome(error=precondition_failed(str(exc))))
            return
        correlation = self._next_correlation
        self._next_correlation += 1
        self._waiting[correlation] = done
        entry = msgpack.packb([int(Op.DEFINITION), self.origin, correlation, data], use_bin_type=True)
        self._spawn(self._propose(correlation, entry, describe(command)))

    def barrier(self, done: Done) -> None:
        self._spawn(self._barrier(done))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _propose(self, correlation: int, entry: bytes, what: str) -> None:
        assert self.group is not None
        try:
            await self.group.propose(entry)
        except WarrenError as exc:
            done = self._waiting.pop(correlation, None)
            if done is not None:
                done(Outcome(error=unavailable(what, exc, disk_full=bool(self.node.disk_alarm))))
                self.node.flush()

    async def _barrier(self, done: Done) -> None:
        assert self.group is not None
        try:
            await self.group.read_barrier()
        except WarrenError as exc:
            done(Outcome(error=unavailable("read the metadata store", exc, change=False,
                                           disk_full=bool(self.node.disk_alarm))))
        else:
            done(Outcome())
        self.node.flush()

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        waiting, self._waiting = self._waiting, {}
        for done in waiting.values():
            done(Outcome(error=AMQPError(ReplyCode.CONNECTION_FORCED, "broker shutting down")))

    # ---- DefinitionsApplier (the metadata state machine calls these) ---------------------

    def apply_definition(self, index: int, entry: list[Any]) -> None:
        _, origin, correlation, data = entry
        command = decode_command(data)
        applied = None
        try:
            applied = self.node.apply_definition(command, index)
            outcome = Outcome(applied.value)
        except AMQPError as error:  # refused here as on every member: the model is unchanged
            outcome = Outcome(error=error)
        done = self._waiting.pop(correlation, None) if origin == self.origin else None
        if done is not None:
            done(outcome)
        if applied is not None:
            self.node.follow_up(applied)
        else:
            self.node.flush()

    def snapshot_definitions(self) -> Any:
        return self.node.broker.export_state()

    def restore_definitions(self, data: Any) -> None:
        for queue in self.node.broker.restore_state(data):
            self.node.queue_deleted(None, queue)
        self.node.host_quorum_queues()
        self.node.flush()
