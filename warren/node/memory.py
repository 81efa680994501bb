"""When the memory alarm is on: the measure, the hysteresis and the fast path between readings.

The measure
-----------
``used = RSS after handing free heap back to the OS`` (read once a second by the I/O layer),
plus, between two readings, the growth of the bytes the node buffers for clients that have
not become messages yet (partial bodies being assembled, incomplete frames).

Why RSS, and why after trimming: RSS is what an operator sees in ``top``, what the OOM killer
and a container's memory limit charge, and what the watermark is documented as; it counts
everything (queued bodies *and* the per-message overhead that dominates for small
messages, consumers, unacked records, buffers) without an estimate that can drift from the
code. Its defect was that it does not fall by itself: CPython and glibc keep freed memory
mapped, so after a drain RSS stayed above the watermark and the alarm never cleared.
``malloc_trim`` returns that memory: measured with a 200 MiB watermark, after draining the
queue that raised the alarm, RSS fell from 233 MiB (untrimmed) to 57 MiB with 10 kB bodies,
from 209 to 67 MiB with 1 kB bodies and from 207 to 103 MiB with 100-byte bodies (pymalloc
keeps arenas that a few live objects pin), each under 90% of the watermark, so the alarm
clears within a reading or two of the drain. A trim of a 200 MiB heap took at most 17 ms, so
it runs only when the reading is above the level that matters (the clear level while the
alarm is on, the watermark while it is off).

The broker's own accounting (bodies in queues, bodies being assembled, outbound buffers) falls
exactly when messages leave, but alone it misses the per-message overhead (about 250 bytes a
message, more than the body for small messages: 100-byte messages reach 200 MiB of RSS at
44 MiB of bodies) and everything else a node holds, so a watermark on it would not bound
what the OS charges. It is used where RSS is too slow: RSS is read once a second, and a
client writing a body that it never finishes can push hundreds of MB in that second without
a message reaching any queue. So between readings, the growth of buffered client bytes is
added to the last reading (those bytes are in RSS too, at the next reading), and crossing the
watermark raises the alarm at once, on the read that crossed it. Measured: ten connections
each announcing a 120 MB body and sending 100 MB of it took a node with a 300 MiB watermark
to 1031 MiB of RSS when nothing counted partial bodies, and to 305 MiB with this.

Known limit: when fragmentation pins RSS above the clear level while little is held (e.g.
half of a queue of tiny messages drained, the rest scattered over every arena), the alarm
stays on until more is drained; the freed blocks are reused by new messages first, so the
node is not wrong about what it costs the machine.

Hysteresis: set above the watermark, clear below ``limits.memory_alarm_clear_ratio`` of it.
"""

from __future__ import annotations


class MemoryMonitor:
    """Pure state: readings and buffered-byte changes in, alarm on/off out."""

    def __init__(self, limit: int, clear_ratio: float) -> None:
        self.on = False
        self.used = 0  # the measure at the last reading
        self.buffered = 0  # client bytes buffered in partial bodies and frames, all connections
        self._buffered_at_reading = 0
        self.limit = limit
        self.clear_ratio = clear_ratio

    @property
    def clear_below(self) -> int:
        return int(self.limit * self.clear_ratio)

    def should_trim(self, rss: int) -> bool:
        """Whether a reading is high enough to be worth a malloc_trim before deciding on it."""
        return rss > (self.clear_below if self.on else self.limit)

    def reading(self, rss: int) -> bool:
        """A fresh RSS reading (after trimming, when :meth:`should_trim` said so); the alarm."""
        self.used = rss
        self._buffered_at_reading = self.buffered
        if self.on:
            self.on = rss >= self.clear_below
        else:
            self.on = rss > self.limit
        return self.on

    def buffered_changed(self, delta: int) -> bool:
        """Buffered client bytes changed by ``delta``; True when that just raised the alarm."""
        self.buffered += delta
        if self.on or delta <= 0:
            return False
        if self.used + self.buffered - self._buffered_at_reading > self.limit:
            self.on = True
            return True
        return False
