"""The simulator's linearizability checker on small histories whose answer is known."""

from __future__ import annotations

from tests.sim.linearizability import INF, Op, check_register


def w(call: float, ret: float, value: int) -> Op:
    return Op(call, ret, True, value)


def r(call: float, ret: float, value: int | None) -> Op:
    return Op(call, ret, False, value)


def test_read_after_completed_write_must_see_it() -> None:
    assert check_register([w(0, 1, 1), r(2, 3, 1)])
    assert not check_register([w(0, 1, 1), r(2, 3, None)])


def test_stale_read_after_a_newer_write_completed() -> None:
    # the deposed-leader read: 2 was written and acknowledged before the read began
    assert not check_register([w(0, 1, 1), w(2, 3, 2), r(4, 5, 1)])


def test_concurrent_read_may_see_either_value() -> None:
    assert check_register([w(0, 1, 1), w(2, 6, 2), r(3, 4, 1)])
    assert check_register([w(0, 1, 1), w(2, 6, 2), r(3, 4, 2)])


def test_reads_cannot_go_back_in_time() -> None:
    # once a read returned the new value, a later read may not return the old one
    assert not check_register([w(0, 1, 1), w(2, 9, 2), r(3, 4, 2), r(5, 6, 1)])


def test_write_of_unknown_outcome_may_or_may_not_happen() -> None:
    assert check_register([w(0, INF, 1), r(5, 6, 1)])
    assert check_register([w(0, INF, 1), r(5, 6, None)])
    # ...but it cannot take effect before it was called
    assert not check_register([r(0, 1, 1), w(2, INF, 1)])


def test_value_nobody_wrote() -> None:
    assert not check_register([w(0, 1, 1), r(2, 3, 7)])


def test_long_sequential_history_is_fast() -> None:
    ops = []
    for i in range(2000):
        ops.append(w(3 * i, 3 * i + 1, i))
        ops.append(r(3 * i + 2, 3 * i + 2, i))
    assert check_register(ops)
