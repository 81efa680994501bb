from __future__ import annotations

from warren.cli.chaos.checker import Ledger, check


def test_the_total_queue_check_counts_as_jepsen_does() -> None:
    ledger = Ledger(attempted={1, 2, 3, 4, 5}, confirmed={1, 2, 3, 4}, nacked={5})
    for delivery in [(1, False), (2, False), (2, True), (3, True), (3, False), (5, False), (9, False)]:
        ledger.delivered(*delivery)
    verdict = check(ledger)
    assert (verdict["lost"], verdict["unexpected"], verdict["recovered"]) == (1, 1, 1)  # 4; 9; 5
    assert verdict["samples"]["lost"] == [4] and verdict["samples"]["unexpected"] == [9]
    # 2 and 3 came twice, once without the flag each (3's original reached its client late)
    assert (verdict["duplicated"], verdict["duplicated_flagged_redelivered"], verdict["duplicated_unflagged"]) == (2, 2, 0)
    assert not verdict["ok"]


def test_a_duplicate_without_the_flag_fails_the_run() -> None:
    ledger = Ledger(attempted={1}, confirmed={1})
    ledger.delivered(1, False)
    assert check(ledger)["ok"]
    ledger.delivered(1, False)
    verdict = check(ledger)
    assert verdict["duplicated_unflagged"] == 1 and not verdict["ok"]
