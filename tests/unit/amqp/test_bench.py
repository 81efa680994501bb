"""The micro-benchmark runs end to end (with a fake clock: unit tests read no clock)."""

from __future__ import annotations

import itertools

from warren.amqp.bench import run


def test_bench_reports_every_rate() -> None:
    ticks = itertools.count()
    lines = run(lambda: float(next(ticks)), count=300, size=5000)
    assert [line.split()[0] for line in lines] == [
        "publish-parse", "ack-parse", "deliver-encode", "confirm-encode", "headers-decode"]
    assert all("msg/s" in line for line in lines)
