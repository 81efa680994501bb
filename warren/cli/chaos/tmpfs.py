"""A full disk for real: a node's data dir on its own small tmpfs, filled by a ballast file.

The ``disk`` nemesis fills the mount with ``posix_fallocate`` until not a byte is free, so
the node's next store write that needs a new page fails as on a full disk (LMDB reports
ENOSPC, or EIO) and its free-space check sees 0 bytes; healing deletes the ballast.
Mounting needs root; :func:`mount` says so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BALLAST = "chaos-ballast"  # in the mount's root, beside the node's store files
SIZE_BYTES = 512 * 1024 * 1024  # room for a bounded run's logs; a tmpfs only uses what is written


class TmpfsError(Exception):
    """The tmpfs cannot be mounted (not root, mount refused)."""


def mount(path: Path, size: int = SIZE_BYTES) -> None:
    if os.geteuid() != 0:
        raise TmpfsError("a full-disk fault needs root (it mounts a small tmpfs per node)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise TmpfsError(f"cannot mount a tmpfs on {path}: {done.stderr.strip()}")


def unmount(path: Path) -> None:
    """The data goes with the mount, and the empty mount point too (so nothing looks like
    data a later ``warren cluster up`` could restart from); harmless when nothing is mounted."""
    if os.path.ismount(path):
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True, timeout=30)
        try:
            path.rmdir()
        except OSError:
            pass


def fill(path: Path) -> int:
    """Take every free byte of the mount (in halving steps: the node writes meanwhile); the bytes taken."""
    fd = os.open(path / BALLAST, os.O_WRONLY | os.O_CREAT, 0o600)
    taken, step = 0, 64 << 20
    try:
        while step >= 4096:
            try:
                os.posix_fallocate(fd, taken, step)
                taken += step
            except OSError:
                step //= 2
    finally:
        os.close(fd)
    return taken


def empty(path: Path) -> None:
    (path / BALLAST).unlink(missing_ok=True)
