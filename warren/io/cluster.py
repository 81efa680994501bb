"""The cluster's I/O glue: the metadata Raft group (group 0) of one node, and membership.

A :class:`ClusterRuntime` runs inside a node (``NodeRuntime`` starts it when a cluster
secret is configured): a :class:`PeerTransport` on the cluster port, a :class:`RaftHost`
hosting group 0, and the pure :class:`MetaStateMachine` it applies to. Its own
:class:`RaftStore` lives in ``data_dir/cluster/`` for now; one LMDB environment for the
broker store and every Raft group of the node is a later step (ARCHITECTURE: one fsync per
batch for everything).

Formation (the first node with a secret and no seeds bootstraps; the others join):

- IDENTITY: ``data_dir/cluster/identity.json`` holds the node's member id once it has one,
  a random ``uid`` (made before its first join, so a join retried after a lost answer gets
  the same record back) and the group's ``genesis`` voters (the bootstrap node, id 1: the
  configuration the log starts from, which every joiner's Raft node must start from too).
  A restarted member rejoins from its own data: it applies its log, which names every
  member and its cluster address, and dials them -- no seeds needed.
- BOOTSTRAP: no identity, no seeds: member 1, a one-voter group; it proposes its own
  ``MEMBER_ADD`` once it leads.
- JOIN: no identity, ``--seeds``: a request on a seed's cluster port (``peer_request``: the
  shared-secret handshake, then one request and one reply). A seed that does not lead
  answers with a redirect to the leader. The leader checks the rules
  (:class:`warren.cluster.membership.Membership`: a name another node holds is refused),
  commits ``MEMBER_ADD`` with the next id and answers with the id and the members. The
  joiner persists its identity and starts its Raft node; ``start`` returns once it is a
  voter. Unreachable seeds are retried until ``cluster_join_timeout_seconds``; a wrong
  secret or a refusal is final. Either way :class:`ClusterJoinError` names the fix.
- RECONCILE: the leader makes the Raft configuration follow the member records, one change
  at a time: a member's node is added as a learner, promoted to voter once it answered and
  caught up; a removed member's node is removed.
- LEAVE / FORGET: ``MEMBER_REMOVE`` (then the reconcile removes it from the configuration).
  A member that applies its own removal stops its Raft node ("left the cluster").

Requests of a follower (a proposal, a leave, its new addresses) go to the leader the same
way as a join: one authenticated connection per request. That is cheap enough for metadata
changes; carrying them on the peer links is a later step.

Health: every message from a peer (node heartbeats come every 50 ms) stamps its last-seen
time; :func:`warren.cluster.membership.member_health` turns those into alive/suspect/dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warren.cluster.membership import (
    Member,
    MembershipRefused,
    member_health,
    parse_address,
    quorum,
)
from warren.cluster.meta_fsm import (
    Applied,
    DefinitionsApplier,
    MetaStateMachine,
    member_add,
    member_remove,
    member_update,
)
from warren.errors import ClusterJoinError, ClusterUnavailable, PeerProtocolError
from warren.io.peer import PeerTLS, PeerTransport, peer_request
from warren.io.raft_host import ProposalFailed, RaftHost
from warren.limits import Limits
from warren.raft.node import RaftNode
from warren.raft.types import ConfChange, ConfChangeKind, message_from_wire
from warren.store.files import private_directory
from warren.store.raft_group_storage import GroupStorage
from warren.store.raft_store import RaftStore

log = logging.getLogger("warren.cluster")

META_GROUP = 0
TICK_SECONDS = 0.01
# As `warren raft-node`: elections in 300-600 ms, heartbeats every 50 ms at 10 ms ticks.
ELECTION_TICKS = 30
HEARTBEAT_TICKS = 5
RECONCILE_SECONDS = 0.1
JOIN_RETRY_SECONDS = (0.2, 1.0)  # backoff between rounds over the seeds: from, up to
REDIRECT_HOPS = 3
IDENTITY_FILE = "identity.json"
LEFT_GRACE_SECONDS = 2.0  # a removed member's links stay this long (see _on_applied_entry)


@dataclass
class ClusterSettings:
    data_dir: str  # the node's data directory; the cluster's state is in data_dir/cluster
    node_name: str
    secret: bytes
    bind: str = "127.0.0.1"
    port: int = 25672  # 0 picks a free one
    seeds: list[tuple[str, int]] = field(default_factory=list)
    tls: PeerTLS | None = None
    limits: Limits = field(default_factory=Limits)
    amqp_address: str = ""  # host:port, for the member record
    http_address: str = ""
    advertise_host: str | None = None  # how peers reach this node (default: bind, or the FQDN)


@dataclass
class Identity:
    uid: str
    id: int | None = None
    genesis: list[int] = field(default_factory=list)

    @staticmethod
    def load_or_create(directory: Path) -> Identity:
        path = directory / IDENTITY_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            identity = Identity(secrets.token_hex(16))
            identity.save(directory)
            return identity
        except (OSError, ValueError) as exc:
            raise ClusterJoinError(f"cannot read {path}: {exc}; restore it from a backup, or "
                                   "delete the cluster/ directory to join as a new member") from exc
        return Identity(str(data["uid"]), data.get("id"), list(data.get("genesis", [])))

    def save(self, directory: Path) -> None:
        path = directory / IDENTITY_FILE
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"uid": self.uid, "id": self.id, "genesis": self.genesis}, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)


class _Groups:
    """The RaftHost's state machine: group 0 is the metadata state machine, every other
    group a quorum queue (``queues``: warren.node.quorum.QuorumQueues, once set)."""

    def __init__(self, fsm: MetaStateMachine, applied: Any) -> None:
        self.fsm = fsm
        self._applied = applied
        self.queues: Any = None

    def apply(self, group: Any, index: int, data: bytes) -> None:
        if group == META_GROUP:
            self.fsm.apply(index, data)
            self._applied(index)
        elif self.queues is not None:
            self.queues.apply(group, index, data)

    def snapshot(self, group: Any) -> bytes:
        if group == META_GROUP:
            return self.fsm.snapshot()
        snapshot: bytes = self.queues.snapshot(group)
        return snapshot

    def snapshot_every(self, group: Any) -> int | None:
        """A quorum queue's snapshot interval (see SnapshotPolicy); None: the host's limits."""
        if group == META_GROUP or self.queues is None:
            return None
        every: int | None = self.queues.snapshot_every(group)
        return every

    def snapshot_size(self, group: Any) -> int:
        """A quorum queue's messages (a deep one's snapshot is built by a forked child); the
        metadata's snapshot is small enough for the loop."""
        if group == META_GROUP or self.queues is None:
            return 0
        size: int = self.queues.snapshot_size(group)
        return size

    def keep_from(self, group: Any) -> int | None:
        """The first entry a quorum queue still reads its bodies from (see RaftHost)."""
        if group == META_GROUP or self.queues is None:
            return None
        keep: int | None = self.queues.keep_from(group)
        return keep

    def restore(self, group: Any, index: int, data: bytes) -> None:
        if group == META_GROUP:
            self.fsm.restore(index, data)
            self._applied(index)
        else:
            self.queues.restore(group, index, data)


class ClusterRuntime:
    """One node's membership of the cluster. ``await start()``, then ``await stop()``."""

    def __init__(self, settings: ClusterSettings, definitions: DefinitionsApplier | None = None) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.fsm = MetaStateMachine(definitions)
        self.fsm.membership.max_members = self.limits.cluster_max_members
        self.fsm.watch(self._on_applied_entry)
        self.groups = _Groups(self.fsm, self._on_applied_index)  # .queues: set before start()
        self.rng: random.Random | None = None
        self.directory = Path(settings.data_dir) / "cluster"
        self.identity: Identity | None = None
        self.transport: PeerTransport | None = None
        self.host: RaftHost | None = None
        self.store: RaftStore | None = None
        self.address = ""  # this node's cluster address (host:port)
        self.last_seen: dict[int, float] = {}  # peer id -> wall time last heard from
        self.watching_since = time.time()
        self.left = False  # this node applied its own removal
        self._applied_index = 0
        self._boot_commit = 0  # the metadata group's commit index on disk when this run began
        # forwarded client traffic, and links that went down or came back (by member name)
        self.on_forwarded: Callable[[str, dict[str, Any]], None] | None = None
        self.on_link_change: Callable[[str, bool], None] | None = None
        # this node's stats for the management plane's cluster view ({"op": "stats"}); set by
        # the HTTP layer (warren.api), None on a node without one
        self.on_stats: Callable[[], dict[str, Any]] | None = None
        self.bootstrapped = False  # this run created the cluster (its first member)
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._admit_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    # --- the interface the rest of the node uses -----------------------------------------
    @property
    def local_id(self) -> int:
        assert self.identity is not None and self.identity.id is not None
        return self.identity.id

    @property
    def is_leader(self) -> bool:
        return self._leads() and not self.left

    def _leads(self) -> bool:
        return self._status().get("role") == "leader"

    @property
    def leader_id(self) -> int | None:
        leader = self._status().get("leader")
        return int(leader) if leader else None

    @property
    def leader_name(self) -> str | None:
        leader = self.leader_id
        member = self.fsm.membership.members.get(leader) if leader else None
        return member.name if member else None

    @property
    def has_quorum(self) -> bool:
        """A leader is known and this node hears from a majority of the voters (itself
        included) within ``cluster_suspect_after_seconds``."""
        status = self._status()
        if not status.get("leader") or self.left:
            return False
        now = time.time()
        fresh = {self.local_id} | {
            peer for peer, seen in self.last_seen.items()
            if now - seen < self.limits.cluster_suspect_after_seconds
        }
        return quorum(status.get("voters", ()), fresh)

    def members(self) -> list[dict[str, Any]]:
        """Every member with its health as this node sees it."""
        now = time.time()
        records = self.fsm.membership.sorted()
        health = member_health(
            now, [m.id for m in records], self.local_id, self.last_seen, self.watching_since,
            self.limits.cluster_suspect_after_seconds, self.limits.cluster_dead_after_seconds,
        )
        status = self._status()
        leader = status.get("leader")
        voters = set(status.get("voters", ()))
        out = []
        for m in records:
            seen = now if m.id == self.local_id else self.last_seen.get(m.id)
            out.append({
                "id": m.id, "name": m.name, "addr": m.amqp, "http_addr": m.http,
                "raft_addr": m.cluster, "status": str(health[m.id]), "is_leader": m.id == leader,
                "voter": m.id in voters, "last_seen_unix": round(seen, 3) if seen else None,
            })
        return out

    def silent_seconds(self) -> dict[str, float]:
        """Per member name, how long this node has not heard from it (0 for itself); one
        never heard since this node started counts from then."""
        now = time.time()
        return {m.name: 0.0 if m.id == self.local_id
                else now - max(self.last_seen.get(m.id, self.watching_since), self.watching_since)
                for m in self.fsm.membership.sorted()}

    def info(self) -> dict[str, Any]:
        status = self._status()
        members = self.members()
        return {
            "local_id": self.local_id, "local_name": self.settings.node_name,
            "leader": self.leader_id, "leader_name": self.leader_name,
            "member_count": len(members), "has_quorum": self.has_quorum, "left": self.left,
            "members": members,
            "raft": {k: status.get(k) for k in ("role", "term", "commit", "applied", "voters", "learners")},
        }

    async def propose(self, entry: bytes) -> int:
        """Commit ``entry`` (msgpack ``[op, ...]``) to the metadata group: its index, once
        applied on THIS node (so what the caller reads next here includes it). Forwarded to
        the leader from a follower. :class:`ClusterUnavailable` when no leader takes it within
        ``cluster_request_timeout_seconds`` (its outcome is then unknown)."""
        deadline = self._deadline()
        index = await self._leader_call({"op": "propose", "entry": entry}, deadline)
        await self._wait_applied(int(index["index"]), deadline)
        return int(index["index"])

    async def read_barrier(self) -> None:
        """Returns once this node applied everything committed before the call (ReadIndex:
        the leader confirms with a quorum that it still leads)."""
        assert self.host is not None
        if self.left:
            raise ClusterUnavailable("this node left the cluster")
        try:
            await self.host.read_index(META_GROUP)
        except ProposalFailed as exc:
            raise ClusterUnavailable(f"no read point from the cluster: {exc}") from None

    async def leave(self, member_id: int) -> None:
        """Remove ``member_id`` (leave, or forget a dead one): MembershipRefused when no such
        member or it is the last; ClusterUnavailable without a leader."""
        self.fsm.membership.check_remove(member_id)
        await self._leader_call({"op": "leave", "id": member_id}, self._deadline())
        if member_id == self.local_id and not self.left:  # committed: this node is out
            self._left()

    async def admit(self, name: str, amqp: str, cluster: str) -> int:
        """An operator admits a node by name before it starts (``POST /v1/cluster/join``):
        its record, unclaimed, that the node claims when it joins with that name."""
        reply = await self._leader_call(
            {"op": "join", "name": name, "uid": "", "amqp": amqp, "http": "", "cluster": cluster},
            self._deadline(),
        )
        return int(reply["id"])

    # --- start and stop -------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        private_directory(self.directory)
        self.identity = Identity.load_or_create(self.directory)
        rng = random.Random(secrets.randbits(64))
        self.transport = PeerTransport(
            self.identity.id or 0, (s.bind, s.port), {}, s.secret, self._on_peer_message,
            self.limits, rng, s.tls, on_request=self._on_request,
        )
        await self.transport.start_listening()
        host = s.advertise_host or (s.bind if s.bind not in ("0.0.0.0", "::", "") else socket.getfqdn())
        self.address = f"{host}:{self.transport.port}"
        try:
            await self._start(rng)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, rng: random.Random) -> None:
        assert self.identity is not None and self.transport is not None
        identity = self.identity
        deadline = asyncio.get_running_loop().time() + self.limits.cluster_join_timeout_seconds
        joined: dict[str, Any] | None = None
        bootstrapping = identity.id is None and not self.settings.seeds
        if identity.id is None:
            if self.settings.seeds:
                joined = await self._join(deadline)
                identity.id, identity.genesis = int(joined["id"]), list(joined["genesis"])
                log.info("joined the cluster as member %d", identity.id)
            else:
                identity.id, identity.genesis = 1, [1]
                log.info("bootstrapping a new cluster as member 1 (no --seeds, no cluster state)")
            identity.save(self.directory)
        elif self.settings.seeds:
            log.info("member %d restarts from its own data; --seeds are not needed", identity.id)
        self.transport.node_id = identity.id
        self.store = RaftStore(self.directory, self.limits.lmdb_map_size)

        def send(peer: int, wire: Any) -> None:
            assert self.transport is not None
            self.transport.send(peer, wire)

        self.rng = rng
        self.host = RaftHost(identity.id, self.store, send, message_from_wire,
                             self.groups, TICK_SECONDS,
                             proposal_timeout=self.limits.cluster_request_timeout_seconds,
                             limits=self.limits)
        self.host.on_peer_change = self._peer_changed
        storage = GroupStorage(self.store, META_GROUP)
        self._boot_commit = storage.load().commit
        self.bootstrapped = bootstrapping
        node = RaftNode(identity.id, META_GROUP, storage, rng, voters=tuple(identity.genesis),
                        election_ticks=ELECTION_TICKS, heartbeat_ticks=HEARTBEAT_TICKS,
                        quiesce_after_ticks=self.limits.raft_quiesce_after_ticks, limits=self.limits)
        self.host.add_group(META_GROUP, node, storage)
        for wire in (joined or {}).get("members", ()):
            self._connect(Member.from_wire(wire))
        self.transport.start_dialing()
        await self.host.start()
        self._tasks.append(asyncio.get_running_loop().create_task(self._reconcile_loop()))
        # Its own record (the bootstrap's first, a restart's new ports): in the background,
        # since a restarted member must come up even while its cluster has no quorum.
        self._tasks.append(asyncio.get_running_loop().create_task(self._keep_record_current()))
        if joined is not None:
            await self._until(deadline, self._is_voter, "catch up and become a voter")
        if bootstrapping:
            await self._until(deadline, lambda: self.local_id in self.fsm.membership.members,
                              "elect itself and record itself as the first member")

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` until the runtime stops (its tasks are cancelled then)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.append(task)
        return task

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transport is not None:
            await self.transport.stop()
        if self.host is not None:
            await self.host.stop()
        if self.store is not None:
            self.store.close()
        for _, future in self._applied_waiters:
            if not future.done():
                future.set_exception(ClusterUnavailable("the node is stopping"))

    # --- joining ----------------------------------------------------------------------------
    async def _join(self, deadline: float) -> dict[str, Any]:
        s = self.settings
        assert self.identity is not None
        loop = asyncio.get_running_loop()
        request = {"op": "join", "name": s.node_name, "uid": self.identity.uid,
                   "amqp": s.amqp_address, "http": s.http_address, "cluster": self.address}
        seeds = ", ".join(f"{h}:{p}" for h, p in s.seeds)
        problem = logged = ""
        delay = JOIN_RETRY_SECONDS[0]
        while True:
            for seed in s.seeds:
                target = seed
                for _ in range(REDIRECT_HOPS):
                    where = f"{target[0]}:{target[1]}"
                    remaining = max(0.1, deadline - loop.time())
                    try:
                        reply = await peer_request(target, s.secret, request, self.limits, s.tls,
                                                   min(remaining, self.limits.cluster_request_timeout_seconds))
                    except PeerProtocolError as exc:
                        raise ClusterJoinError(f"cannot join the cluster through {where}: {exc}") from None
                    except ssl.SSLError as exc:
                        raise ClusterJoinError(
                            f"cannot join the cluster through {where}: TLS failed: {exc.reason or exc}; "
                            "check --cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca") from None
                    except (OSError, TimeoutError, ConnectionError) as exc:
                        problem = f"{where} is unreachable ({exc or type(exc).__name__})"
                        break
                    if not isinstance(reply, dict):
                        problem = f"{where} answered {reply!r}"
                        break
                    if "redirect" in reply:
                        target = parse_address(str(reply["redirect"]))
                        continue
                    if "error" in reply:
                        if reply.get("fatal"):
                            raise ClusterJoinError(f"the cluster refused this node: {reply['error']}")
                        problem = f"{where}: {reply['error']}"
                        break
                    return reply
            if loop.time() + delay > deadline:
                raise ClusterJoinError(
                    f"could not join the cluster through --seeds {seeds} within "
                    f"{self.limits.cluster_join_timeout_seconds:g}s: {problem}; check that a seed "
                    "runs and that its cluster port is reachable from here (or raise "
                    "cluster_join_timeout_seconds)"
                )
            if problem != logged:  # once per cause, not once per retry
                logged = problem
                log.info("joining: %s; retrying until the join timeout", problem)
            await asyncio.sleep(delay)
            delay = min(JOIN_RETRY_SECONDS[1], delay * 2)

    async def _until(self, deadline: float, predicate: Any, what: str) -> None:
        loop = asyncio.get_running_loop()
        while not predicate():
            if loop.time() > deadline:
                raise ClusterJoinError(
                    f"member {self.local_id} did not {what} within "
                    f"{self.limits.cluster_join_timeout_seconds:g}s (cluster_join_timeout_seconds); "
                    "is a majority of the cluster's members running?"
                )
            await asyncio.sleep(0.02)

    def _is_voter(self) -> bool:
        return self.local_id in self._status().get("voters", ()) and (
            self.local_id in self.fsm.membership.members)

    # --- serving requests (on the leader; the others redirect) -------------------------------
    async def _on_request(self, request: Any) -> Any:
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"error": "malformed request", "fatal": True}
        if self.host is None or self.identity is None or self.identity.id is None or self.left:
            return {"error": "this node is not a member (yet)", "retry": True}
        if request["op"] == "stats":  # any member answers for itself: never redirected
            if self.on_stats is None:
                return {"error": "this node has no management plane", "fatal": True}
            return {"stats": self.on_stats()}
        if not self.is_leader:
            leader = self.fsm.membership.members.get(self.leader_id or 0)
            if leader is not None:
                return {"redirect": leader.cluster}
            return {"error": "no leader elected yet", "retry": True}
        op = request["op"]
        try:
            if op == "join":
                return await self._admit(request)
            if op == "propose" and isinstance(request.get("entry"), bytes):
                return {"index": await self._propose_here(request["entry"])}
            if op == "update" and isinstance(request.get("member"), list):
                member = Member.from_wire(request["member"])
                self.fsm.membership.check_update(member)
                return {"index": await self._propose_here(member_update(member))}
            if op == "leave" and isinstance(request.get("id"), int):
                await self.read_barrier()
                removed = self.fsm.membership.check_remove(request["id"])
                index = await self._propose_here(member_remove(removed.id))
                log.info("member %d (%s) removed from the cluster", removed.id, removed.name)
                return {"index": index}
        except MembershipRefused as exc:
            return {"error": str(exc), "fatal": True}
        except ClusterUnavailable as exc:
            return {"error": str(exc), "retry": True}
        return {"error": f"bad request {op!r}", "fatal": True}

    async def _admit(self, request: dict[str, Any]) -> dict[str, Any]:
        fields = [request.get(k) for k in ("name", "uid", "amqp", "http", "cluster")]
        if not all(isinstance(f, str) for f in fields):
            return {"error": "malformed join request", "fatal": True}
        name, uid, amqp, http, cluster = (str(f) for f in fields)
        async with self._admit_lock:
            await self.read_barrier()
            try:
                member = self.fsm.membership.admit(name, uid, amqp, http, cluster)
            except MembershipRefused as exc:
                log.warning("refused node %r (at %s) joining the cluster: %s", name, cluster, exc)
                raise
            await self._propose_here(member_add(member))
        if self.fsm.membership.members.get(member.id) != member:
            return {"error": "a concurrent change refused the join; retrying", "retry": True}
        log.info("node %r (at %s) joins the cluster as member %d", name, cluster, member.id)
        assert self.identity is not None
        return {"id": member.id, "genesis": self.identity.genesis,
                "members": [m.to_wire() for m in self.fsm.membership.sorted()]}

    async def _propose_here(self, entry: bytes) -> int:
        assert self.host is not None
        try:
            return await self.host.propose(META_GROUP, entry)
        except ProposalFailed as exc:
            raise ClusterUnavailable(f"the metadata group did not commit it: {exc}") from None

    async def _leader_call(self, request: dict[str, Any], deadline: float) -> dict[str, Any]:
        """``request`` served by the leader (this node, or over the cluster port), retried
        while there is no leader or it moved, until ``deadline``."""
        loop = asyncio.get_running_loop()
        s = self.settings
        problem = "no leader"
        while loop.time() < deadline:
            if self.left:
                raise ClusterUnavailable("this node left the cluster")
            if self.is_leader:
                reply = await self._on_request(request)
            else:
                leader = self.fsm.membership.members.get(self.leader_id or 0)
                if leader is None:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    reply = await peer_request(parse_address(leader.cluster), s.secret, request,
                                               self.limits, s.tls, max(0.1, deadline - loop.time()))
                except (OSError, TimeoutError, ConnectionError, PeerProtocolError) as exc:
                    raise ClusterUnavailable(
                        f"the leader (member {leader.id} at {leader.cluster}) did not answer: "
                        f"{exc or type(exc).__name__}; the outcome is unknown") from None
            if "error" not in reply and "redirect" not in reply:
                return reply
            if reply.get("fatal"):
                raise MembershipRefused(str(reply["error"]))
            problem = str(reply.get("error", "the leader moved"))
            await asyncio.sleep(0.05)
        raise ClusterUnavailable(
            f"the cluster did not take it within {self.limits.cluster_request_timeout_seconds:g}s: {problem}")

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.limits.cluster_request_timeout_seconds

    # --- applied entries ----------------------------------------------------------------------
    def _on_applied_index(self, index: int) -> None:
        self._applied_index = index
        if self._applied_waiters:
            keep = []
            for want, future in self._applied_waiters:
                if want <= index:
                    if not future.done():
                        future.set_result(None)
                else:
                    keep.append((want, future))
            self._applied_waiters = keep

    async def wait_recovered(self) -> None:
        """Returns once this node applied what it had committed before it stopped (its own
        log: no quorum needed), so its model is at least as new as in its last run. Replaying
        a long log (quorum queues' included) takes as long as it takes: this fails only when
        no group applied anything for ``cluster_request_timeout_seconds``. (It reads the Raft
        node's applied index: the last committed entry may be a new leader's no-op, which
        the state machine never sees.)"""
        assert self.host is not None
        meta = self.host.groups[META_GROUP].node
        loop = asyncio.get_running_loop()
        progress, stalled_since = -1, loop.time()
        while meta.applied < self._boot_commit:  # type: ignore[attr-defined]
            applied = sum(slot.node.applied for slot in self.host.groups.values())  # type: ignore[attr-defined]
            if applied != progress:
                progress, stalled_since = applied, loop.time()
            elif loop.time() - stalled_since > self.limits.cluster_request_timeout_seconds:
                raise ClusterUnavailable(f"entry {self._boot_commit} committed but not applied here: "
                                         f"the log replay stopped at {meta.applied}")  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)

    async def _wait_applied(self, index: int, deadline: float) -> None:
        if self._applied_index >= index:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, future))
        try:
            await asyncio.wait_for(future, max(0.01, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            raise ClusterUnavailable(f"entry {index} committed but not applied here in time") from None

    def _on_applied_entry(self, applied: Applied) -> None:
        """Connect to members as they join, let go of those that leave."""
        if applied.op == 0 and applied.changed:  # a snapshot restored: everything may differ
            known = set(self.fsm.membership.members)
            for member in self.fsm.membership.members.values():
                self._connect(member)
            if self.transport is not None:
                for peer in self.transport.peer_ids() - known:
                    self._disconnect(peer)
            return
        if applied.member is not None:
            self._connect(applied.member)
        if applied.removed is not None:
            if self.identity is not None and applied.removed == self.identity.id:
                self._left()
            else:
                # Not at once: the leader still tells the member its removal committed
                # (a member removed while running learns it left), and Raft still talks to
                # it until the reconcile removed it from the configuration.
                asyncio.get_running_loop().call_later(LEFT_GRACE_SECONDS, self._forget_peer, applied.removed)

    def _left(self) -> None:
        if not self.left:
            log.warning("this node (member %d) was removed from the cluster: it left", self.local_id)
            self.left = True

    def _connect(self, member: Member) -> None:
        if self.identity is None or member.id == self.identity.id or not member.claimed:
            return
        try:
            address = parse_address(member.cluster)
        except MembershipRefused:
            return
        if self.transport is not None:
            self.transport.add_peer(member.id, address)
        if self.host is not None:
            self.host.add_peer(member.id)

    def _forget_peer(self, peer: int) -> None:
        if peer not in self.fsm.membership.members:  # not back (an operator re-admitted it)
            self._disconnect(peer)

    def _disconnect(self, peer: int) -> None:
        if self.transport is not None:
            self.transport.remove_peer(peer)
        if self.host is not None:
            self.host.remove_peer(peer)
        self.last_seen.pop(peer, None)

    def _on_peer_message(self, peer: int, message: Any) -> None:
        self.last_seen[peer] = time.time()
        assert self.host is not None
        if isinstance(message, dict):  # forwarded client traffic (Raft's is lists)
            member = self.fsm.membership.members.get(peer)
            if self.on_forwarded is not None and member is not None:
                self.on_forwarded(member.name, message)
            return
        self.host.on_peer_message(peer, message)

    # --- forwarded client traffic (warren.node.remote) -----------------------------------
    def send_to(self, name: str, message: dict[str, Any]) -> None:
        member = self.fsm.membership.by_name(name)
        if member is not None and self.transport is not None:
            self.transport.send(member.id, message)

    def is_up(self, name: str) -> bool:
        """The member called ``name`` answers (its link is up by node-level liveness)."""
        member = self.fsm.membership.by_name(name)
        if member is None or self.host is None:
            return False
        return member.id == self.local_id or member.id not in self.host.down

    async def request_member(self, name: str, request: dict[str, Any], timeout: float) -> Any:
        """One request (see ``_on_request``) to the member called ``name``, over its cluster
        port; OSError/TimeoutError/PeerProtocolError when it does not answer in ``timeout``."""
        member = self.fsm.membership.by_name(name)
        if member is None or not member.claimed:
            raise ConnectionError(f"no member {name!r}")
        if member.id == self.local_id:
            return await self._on_request(request)
        s = self.settings
        return await peer_request(parse_address(member.cluster), s.secret, request, self.limits, s.tls, timeout)

    def links(self) -> dict[str, bool]:
        """Each other member's peer link: up when this node can send to it and node-level
        liveness does not consider it down."""
        if self.transport is None or self.host is None:
            return {}
        connected = self.transport.connected_to()
        return {m.name: m.id in connected and m.id not in self.host.down
                for m in self.fsm.membership.sorted() if m.id != self.local_id and m.claimed}

    def _peer_changed(self, peer: int, reachable: bool) -> None:
        member = self.fsm.membership.members.get(peer)
        if member is not None and self.on_link_change is not None:
            self.on_link_change(member.name, reachable)

    def _status(self) -> dict[str, Any]:
        if self.host is None:
            return {}
        return self.host.status(META_GROUP) or {}

    # --- background ------------------------------------------------------------------------
    async def _keep_record_current(self) -> None:
        """Propose this node's record when it lacks one (bootstrap) or its addresses changed
        (a restart on other ports), until it holds."""
        s = self.settings
        while not self.left:
            mine = Member(self.local_id, s.node_name, self._uid(), s.amqp_address, s.http_address,
                          self.address)
            current = self.fsm.membership.members.get(self.local_id)
            if current == mine:
                return
            try:
                if current is None:
                    if self.local_id != 1 or self.fsm.membership.members:
                        return  # not the bootstrap: its record comes with its join
                    if self.is_leader:
                        await self._propose_here(member_add(mine))
                        continue
                else:
                    await self._leader_call({"op": "update", "member": mine.to_wire()}, self._deadline())
            except (ClusterUnavailable, MembershipRefused) as exc:
                log.info("cannot record this node's addresses yet: %s", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(0.05)

    def _uid(self) -> str:
        assert self.identity is not None
        return self.identity.uid

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            if not self._leads():
                if self.left and self.transport is not None and self.host is not None:
                    await self._retire()
                    return
                continue
            try:
                await self._reconcile_once()
            except (ProposalFailed, ClusterUnavailable) as exc:
                log.info("membership change postponed: %s", exc)
                await asyncio.sleep(0.5)

    async def _reconcile_once(self) -> None:
        """One configuration change (or none) towards the member records."""
        assert self.host is not None
        slot = self.host.groups[META_GROUP]
        config = slot.node.config()  # type: ignore[attr-defined]
        membership = self.fsm.membership
        for node_id in sorted(config.members):
            if node_id in membership.removed and node_id not in membership.members:
                if node_id == self.local_id:
                    # the last change a leader makes: it steps down once this commits
                    await self.host.remove_member(META_GROUP, node_id)
                    return
                await self.host.remove_member(META_GROUP, node_id)
                return
        for member in membership.sorted():
            if not member.claimed or member.id in config.voters:
                continue
            if member.id not in config.learners:
                await self.host.change_membership(META_GROUP, ConfChange(ConfChangeKind.ADD_LEARNER, member.id))
                return
            status = self._status()
            lag = status.get("lag", {}).get(member.id)
            heard = time.time() - self.last_seen.get(member.id, 0) < self.limits.cluster_suspect_after_seconds
            if lag is not None and heard and lag < max(1, status.get("last_index", 0)) \
                    and lag <= self.limits.raft_max_append_entries:
                await self.host.add_member(META_GROUP, member.id, timeout=self.limits.cluster_join_timeout_seconds)
                log.info("member %d (%s) is a voter", member.id, member.name)
                return

    async def _retire(self) -> None:
        """This node left: stop its Raft node and peer links (the rest of the node runs on)."""
        assert self.transport is not None and self.host is not None
        with contextlib.suppress(Exception):
            await self.transport.stop()
        with contextlib.suppress(Exception):
            await self.host.stop()
