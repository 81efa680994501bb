"""``warren cluster`` knows its own processes by pid and start, the start counted in clock
ticks since boot: a stepped wall clock (seen on this project's VMs: 16 s in 20 minutes)
must not make ``down`` take its nodes for strangers and leave them running."""

from __future__ import annotations

import os

from warren.cli.cluster_cmd import _alive, _start_ticks


def test_a_process_is_known_by_its_start_ticks_whatever_the_wall_clock_says() -> None:
    me = os.getpid()
    ticks = _start_ticks(me)
    assert ticks is not None
    assert _alive({"pid": me, "start_ticks": ticks, "create_time": 0.0})  # a create time far off
    assert not _alive({"pid": me, "start_ticks": ticks + 1})  # the pid now names another process
    assert not _alive({"pid": None})
