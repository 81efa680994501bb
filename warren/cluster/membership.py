"""Cluster membership as the metadata group applies it: member records and their rules.

Pure: no clock, no sockets. Who may join, leave or be forgotten is decided here, by the
same code on the leader (before it proposes) and on every replica (when it applies), so a
race between two leaders' proposals cannot leave replicas disagreeing: an entry that breaks
a rule when applied is refused identically everywhere and changes nothing.

A member record is what the cluster knows of a node: its id (assigned by the leader, never
reused: ``next_id`` only grows), its name (``--node-name``, unique in the cluster), ``uid``
(a random token its data directory keeps, so a node that retries a join -- its answer got
lost -- gets its own record back, while a *different* node claiming the name is refused),
and the addresses of its AMQP, HTTP and cluster ports (``host:port``). A record with an
empty ``uid`` was admitted by an operator (``POST /v1/cluster/join``) and is claimed by the
first node that joins with that name.

The Raft configuration of the metadata group follows these records: the leader adds a
member's node as a learner, promotes it once caught up, and removes a node whose record is
gone -- one configuration change at a time (``warren.io.cluster``).

Health is a pure function of how long ago a member was last heard from (times are inputs):
alive, then suspect after ``suspect_after`` seconds of silence, then dead after
``dead_after``. It is shown, never acted on: a dead member stays one until it leaves or an
operator forgets it (removing a member changes the quorum, a decision for a human).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from warren.errors import WarrenError

MAX_MEMBERS = 7


class MembershipRefused(WarrenError):
    """A join, leave or update breaks a membership rule; the text names the fix."""


class Health(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    uid: str  # "" while admitted by an operator and not yet claimed by its node
    amqp: str  # host:port of the AMQP listener
    http: str  # host:port of the management API ("" when it has none)
    cluster: str  # host:port of the cluster (peer) port

    def to_wire(self) -> list[Any]:
        return [self.id, self.name, self.uid, self.amqp, self.http, self.cluster]

    @staticmethod
    def from_wire(fields: Any) -> Member:
        if not (isinstance(fields, list | tuple) and len(fields) == 6):
            raise MembershipRefused(f"malformed member record: {fields!r}")
        id_, name, uid, amqp, http, cluster = fields
        if not (isinstance(id_, int) and id_ > 0) or not all(
            isinstance(v, str) for v in (name, uid, amqp, http, cluster)
        ):
            raise MembershipRefused(f"malformed member record: {fields!r}")
        if not name:
            raise MembershipRefused("a member needs a name")
        return Member(id_, name, uid, amqp, http, cluster)

    @property
    def claimed(self) -> bool:
        return bool(self.uid)


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); MembershipRefused naming the problem."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MembershipRefused(f"{text!r} is not host:port")
    return host.strip("[]"), int(port)


class Membership:
    """The member records and the rules for changing them."""

    def __init__(self, max_members: int = MAX_MEMBERS) -> None:
        assert 1 <= max_members <= MAX_MEMBERS
        self.max_members = max_members
        self.members: dict[int, Member] = {}
        self.next_id = 1
        self.removed: set[int] = set()  # ids that were members and left or were forgotten

    # --- queries -------------------------------------------------------------------------
    def by_name(self, name: str) -> Member | None:
        for member in self.members.values():
            if member.name == name:
                return member
        return None

    def sorted(self) -> list[Member]:
        return [self.members[i] for i in sorted(self.members)]

    # --- decisions (the leader, before proposing) ---------------------------------------
    def admit(self, name: str, uid: str, amqp: str, http: str, cluster: str) -> Member:
        """The record to propose for a node asking to join (``MEMBER_ADD``): its own record
        again when it already joined (same uid), an operator's unclaimed record of that name,
        or a new one with the next id. Refuses a name another node holds, and a full cluster."""
        parse_address(cluster)
        existing = self.by_name(name)
        if existing is not None:
            if existing.uid == uid or not existing.claimed:
                return Member(existing.id, name, uid, amqp, http, cluster)
            raise MembershipRefused(
                f"node name {name!r} is already member {existing.id} of the cluster, held by "
                f"another node (at {existing.cluster}); start this node with another "
                f"--node-name, or forget the old member first (POST /v1/cluster/leave "
                f'{{"node_id": {existing.id}}})'
            )
        if uid:
            for member in self.members.values():
                if member.uid == uid:
                    raise MembershipRefused(
                        f"this node's data directory is member {member.id} ({member.name!r}) "
                        f"already; restart it with --node-name {member.name}"
                    )
        if len(self.members) >= self.max_members:
            raise MembershipRefused(
                f"the cluster has {len(self.members)} members, the most it may have "
                f"(cluster_max_members); remove one first"
            )
        return Member(self.next_id, name, uid, amqp, http, cluster)

    def check_update(self, member: Member) -> None:
        """A member's new addresses or name (``MEMBER_UPDATE``): only its own record."""
        current = self.members.get(member.id)
        if current is None:
            raise MembershipRefused(f"member {member.id} is not in the cluster (it left or was "
                                    "forgotten); delete its data directory's cluster/ to join anew")
        if current.claimed and current.uid != member.uid:
            raise MembershipRefused(f"member {member.id} belongs to another node")
        other = self.by_name(member.name)
        if other is not None and other.id != member.id:
            raise MembershipRefused(f"node name {member.name!r} is already member {other.id}")
        parse_address(member.cluster)

    def check_remove(self, member_id: int) -> Member:
        member = self.members.get(member_id)
        if member is None:
            raise MembershipRefused(f"no member {member_id} in the cluster "
                                    f"(members: {sorted(self.members)})")
        if len(self.members) == 1:
            raise MembershipRefused(f"member {member_id} is the last one; a cluster cannot "
                                    "remove its last member")
        return member

    # --- applying committed entries (every replica, same outcome) -----------------------
    def apply_add(self, member: Member) -> bool:
        """False (nothing changes) when the entry breaks a rule: a name or id held by another
        node, an id that left, or a full cluster."""
        if member.id in self.removed:
            return False
        current = self.members.get(member.id)
        if current is not None:
            if current.claimed and current.uid != member.uid:
                return False
        elif member.id < self.next_id or len(self.members) >= self.max_members:
            return False
        other = self.by_name(member.name)
        if other is not None and other.id != member.id:
            return False
        self.members[member.id] = member
        self.next_id = max(self.next_id, member.id + 1)
        return True

    def apply_update(self, member: Member) -> bool:
        try:
            self.check_update(member)
        except MembershipRefused:
            return False
        self.members[member.id] = member
        return True

    def apply_remove(self, member_id: int) -> bool:
        if member_id not in self.members:
            return False
        del self.members[member_id]
        self.removed.add(member_id)
        return True

    # --- snapshot ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "members": [m.to_wire() for m in self.sorted()],
            "next_id": self.next_id,
            "removed": sorted(self.removed),
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        self.members = {m.id: m for m in (Member.from_wire(w) for w in data["members"])}
        self.next_id = int(data["next_id"])
        self.removed = set(data.get("removed", ()))


def health(silent_for: float, suspect_after: float, dead_after: float) -> Health:
    """A member's health from how many seconds ago it was last heard from."""
    assert 0 < suspect_after < dead_after
    if silent_for < suspect_after:
        return Health.ALIVE
    if silent_for < dead_after:
        return Health.SUSPECT
    return Health.DEAD


def member_health(
    now: float,
    members: Iterable[int],
    local_id: int,
    last_seen: Mapping[int, float],
    watching_since: float,
    suspect_after: float,
    dead_after: float,
) -> dict[int, Health]:
    """Every member's health as this node sees it. ``last_seen``: when each peer was last
    heard from; a member never heard since ``watching_since`` (this node's start) counts as
    silent since then. This node itself is alive."""
    out = {}
    for member in members:
        if member == local_id:
            out[member] = Health.ALIVE
            continue
        seen = max(last_seen.get(member, watching_since), watching_since)
        out[member] = health(now - seen, suspect_after, dead_after)
    return out


def quorum(voters: Iterable[int], reachable: Iterable[int]) -> bool:
    """Whether the reachable nodes include a majority of the voters."""
    voting = set(voters)
    return bool(voting) and len(voting & set(reachable)) >= len(voting) // 2 + 1
