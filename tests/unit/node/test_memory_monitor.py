"""The memory alarm's decisions: hysteresis on readings, and the fast path between them."""

from __future__ import annotations

from warren.node.memory import MemoryMonitor

MIB = 1024 * 1024


def test_alarm_sets_above_the_watermark_and_clears_only_below_the_clear_ratio() -> None:
    monitor = MemoryMonitor(100 * MIB, 0.9)
    assert monitor.reading(100 * MIB) is False  # at the watermark: not above it
    assert monitor.reading(101 * MIB) is True
    assert monitor.reading(95 * MIB) is True  # under the watermark but above 90 MiB: still on
    assert monitor.reading(89 * MIB) is False
    assert monitor.reading(95 * MIB) is False  # and stays off until above the watermark again


def test_trims_only_when_the_reading_is_high_enough_to_matter() -> None:
    monitor = MemoryMonitor(100 * MIB, 0.9)
    assert not monitor.should_trim(95 * MIB)  # off: only above the watermark
    assert monitor.should_trim(101 * MIB)
    monitor.reading(101 * MIB)
    assert monitor.should_trim(95 * MIB)  # on: whenever a trim could clear it
    assert not monitor.should_trim(80 * MIB)


def test_buffered_bytes_raise_the_alarm_between_readings() -> None:
    monitor = MemoryMonitor(100 * MIB, 0.9)
    monitor.buffered_changed(5 * MIB)  # before the reading: part of it
    monitor.reading(60 * MIB)
    assert monitor.buffered_changed(30 * MIB) is False  # 90 MiB
    assert monitor.buffered_changed(-10 * MIB) is False  # a body completed: 80 MiB
    assert monitor.buffered_changed(20 * MIB) is False  # 100 MiB: not above
    assert monitor.buffered_changed(1) is True and monitor.on
    assert monitor.buffered_changed(MIB) is False  # already on: raised once
    # the next reading sees those bytes in RSS and decides with hysteresis
    assert monitor.reading(95 * MIB) is True
    monitor.buffered_changed(-40 * MIB)  # the publishers went away
    assert monitor.reading(55 * MIB) is False
