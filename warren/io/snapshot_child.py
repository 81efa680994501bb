"""A state machine snapshot serialized by a forked child, so the event loop does not stop.

A quorum queue's snapshot is every message's record: for a million messages, seconds of
Python. Taken on the event loop, that stalls every connection and every Raft group of the
node long enough for its peers to think it dead and elect new leaders. ``fork()`` gives the
child the state exactly as it is at that instant (copy-on-write, as Redis's BGSAVE); the
child encodes it and streams the bytes back through a pipe while the parent keeps applying
entries. The parent hands the bytes to the Raft core as the snapshot at the index applied
when it forked.

The child runs nothing but ``build``: it drops the parent's signal handlers and wake-up fd
(a signal to the process group must not reach the parent's loop through it), closes every
inherited descriptor but its pipe (a socket the parent closes must close now, not when the
child exits), and leaves with ``os._exit`` (no atexit handlers, no flushed buffers). If the
parent dies, its pipe's read end closes and the child's next write fails: it exits too.
Memory: the pages the child touches (reference counts) or the parent writes meanwhile are
copied, up to the state's size for a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
import struct
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">Bq")  # has keep_from, keep_from
_PIPE_BYTES = 1 << 20  # asked of the kernel: fewer wake-ups per snapshot than its 64 KiB
_READ_BYTES = 1 << 20
Build = Callable[[], "tuple[bytes, int | None]"]  # (snapshot, keep_from), run in the child


class ChildSnapshot:
    """One snapshot being built by a child; ``result`` is set when it is complete."""

    def __init__(self, index: int, build: Build, on_done: Callable[[ChildSnapshot], None]) -> None:
        self.index = index  # the applied index it captures
        self.result: tuple[bytes, int | None] | None = None
        self._on_done = on_done
        self._chunks: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self.started = time.monotonic()
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # Linux only; elsewhere the default size
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child; coverage does not follow it)
            _run_child(read_fd, write_fd, build)
        os.close(write_fd)
        self.pid = pid
        self._fd = read_fd
        os.set_blocking(read_fd, False)
        self._loop.add_reader(read_fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, _READ_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            log.error("reading a snapshot from its child %d failed: %s", self.pid, exc)
            chunk = b""
            self._chunks = []
        if chunk:
            self._chunks.append(chunk)
            return
        self._close()
        data = b"".join(self._chunks)
        self._chunks = []
        if self._exit_status() == 0 and len(data) >= _HEADER.size:
            has_keep, keep_from = _HEADER.unpack_from(data)
            self.result = (data[_HEADER.size :], keep_from if has_keep else None)
            log.info("a child built the snapshot at %d (%d bytes) in %.2f s",
                     self.index, len(data), time.monotonic() - self.started)
        else:
            log.error("the child %d building a snapshot at %d failed; the next one is taken on the loop",
                      self.pid, self.index)
        self._on_done(self)

    def _exit_status(self) -> int:
        _, status = os.waitpid(self.pid, 0)  # it closed its pipe: it is exiting now
        return os.waitstatus_to_exitcode(status)

    def _close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1

    def cancel(self) -> None:
        """Stop the child (the group went away, the host stops); nothing is handed on."""
        if self._fd < 0:
            return
        self._close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _run_child(read_fd: int, write_fd: int, build: Build) -> None:  # pragma: no cover
    code = 1
    try:
        gc.disable()  # a collection would touch (and copy) every tracked object
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.close(read_fd)
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
        data, keep_from = build()
        for part in (_HEADER.pack(keep_from is not None, keep_from or 0), data):
            view = memoryview(part)
            while view:
                view = view[os.write(write_fd, view) :]
        code = 0
    finally:
        os._exit(code)
