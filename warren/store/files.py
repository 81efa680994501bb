"""Data directories readable by the node's user only: the store holds password hashes."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_directory(path: Path, git_ignored: bool = False) -> None:
    """Create ``path`` (and parents) as 0700 and tighten what is already in it.

    The chmod runs on every start, not only on creation, so a data directory made by an
    older Warren (0755 directories, 0644 files) is closed on upgrade too.
    """
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    marker = path / ".gitignore"
    if git_ignored and not marker.exists():
        # a node started inside a checkout (./warren-data) stays out of `git status`, as a venv does
        marker.write_text("*\n")
    for root, dirs, files in os.walk(path):
        os.chmod(root, DIR_MODE)
        for name in dirs:
            os.chmod(os.path.join(root, name), DIR_MODE)
        for name in files:
            target = os.path.join(root, name)
            if not os.path.islink(target):
                os.chmod(target, FILE_MODE)
