"""Membership rules and health: pure, no sockets, no clocks."""

from __future__ import annotations

import pytest

from warren.cluster.membership import (
    Health,
    Member,
    Membership,
    MembershipRefused,
    health,
    member_health,
    quorum,
)


def joined(m: Membership, name: str, uid: str, port: int = 25672) -> Member:
    member = m.admit(name, uid, f"h-{name}:5672", f"h-{name}:15672", f"h-{name}:{port}")
    assert m.apply_add(member)
    return member


def test_ids_are_assigned_in_order_and_never_reused() -> None:
    m = Membership()
    a, b = joined(m, "a", "ua"), joined(m, "b", "ub")
    assert (a.id, b.id) == (1, 2)
    assert m.apply_remove(2)
    c = joined(m, "c", "uc")
    assert c.id == 3  # 2 left: its id is not handed out again
    assert not m.apply_add(Member(2, "b", "ub", "", "", "h:1"))  # nor re-added by a stale entry


def test_a_retried_join_gets_its_own_record_back() -> None:
    m = Membership()
    first = joined(m, "a", "ua")
    again = m.admit("a", "ua", "new:5672", "", "new:25672")
    assert again.id == first.id and again.cluster == "new:25672"


def test_a_different_node_claiming_a_name_is_refused_with_the_fix() -> None:
    m = Membership()
    joined(m, "a", "ua")
    with pytest.raises(MembershipRefused, match="already member 1.*--node-name.*leave"):
        m.admit("a", "other-uid", "x:1", "", "x:2")
    # and the same rule holds when applying an entry that slipped past another leader
    assert not m.apply_add(Member(5, "a", "other-uid", "", "", "x:2"))


def test_an_operator_admitted_record_is_claimed_by_its_node() -> None:
    m = Membership()
    joined(m, "a", "ua")
    admitted = m.admit("b", "", "b:5672", "", "b:25672")
    assert m.apply_add(admitted) and not m.members[admitted.id].claimed
    claim = m.admit("b", "ub", "b:5672", "b:15672", "b:25672")
    assert claim.id == admitted.id and m.apply_add(claim) and m.members[claim.id].claimed


def test_at_most_seven_members_and_never_the_last_removed() -> None:
    m = Membership()
    for i in range(7):
        joined(m, f"n{i}", f"u{i}")
    with pytest.raises(MembershipRefused, match="most it may have"):
        m.admit("n7", "u7", "x:1", "", "x:2")
    solo = Membership()
    only = joined(solo, "a", "ua")
    with pytest.raises(MembershipRefused, match="last"):
        solo.check_remove(only.id)
    with pytest.raises(MembershipRefused, match="no member 9"):
        m.check_remove(9)


def test_updates_only_of_ones_own_record() -> None:
    m = Membership()
    a = joined(m, "a", "ua")
    joined(m, "b", "ub")
    assert m.apply_update(Member(a.id, "a", "ua", "a:1", "", "a:2"))
    assert m.members[a.id].amqp == "a:1"
    assert not m.apply_update(Member(a.id, "a", "ub", "", "", "a:2"))  # b's uid
    assert not m.apply_update(Member(a.id, "b", "ua", "", "", "a:2"))  # b's name
    assert not m.apply_update(Member(9, "z", "uz", "", "", "z:2"))


def test_a_bad_cluster_address_is_refused() -> None:
    with pytest.raises(MembershipRefused, match="host:port"):
        Membership().admit("a", "ua", "", "", "no-port")


def test_health_from_silence() -> None:
    assert health(0.0, 1.0, 3.0) is Health.ALIVE
    assert health(1.0, 1.0, 3.0) is Health.SUSPECT
    assert health(3.0, 1.0, 3.0) is Health.DEAD
    seen = {2: 100.0, 3: 97.5}
    out = member_health(100.5, [1, 2, 3, 4], 1, seen, watching_since=99.0, suspect_after=1.0, dead_after=3.0)
    # 1 is this node; 4 was never heard since this node started 1.5 s ago
    assert out == {1: Health.ALIVE, 2: Health.ALIVE, 3: Health.SUSPECT, 4: Health.SUSPECT}


def test_quorum() -> None:
    assert quorum([1, 2, 3], [1, 2])
    assert not quorum([1, 2, 3], [1])
    assert not quorum([], [1])
    assert quorum([1], [1])


def test_snapshot_round_trip() -> None:
    m = Membership()
    joined(m, "a", "ua")
    joined(m, "b", "ub")
    m.apply_remove(1)
    copy = Membership()
    copy.restore(m.snapshot())
    assert copy.members == m.members and copy.next_id == 3 and copy.removed == {1}
