"""The data directory holds password hashes: only the node's user may read it."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from warren.store.broker_store import BrokerStore, WriteBatch
from warren.store.raft_store import RaftStore


def _modes(root: Path) -> dict[str, int]:
    found = {}
    for path in [root, *root.rglob("*")]:
        found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_new_data_directory_is_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual default: 0755 directories, 0644 files
    try:
        data = tmp_path / "data"
        store = BrokerStore(data, 1 << 20)
        batch = WriteBatch()
        batch.put_definition("users", [{"name": "alice", "password_hash": "secret"}])
        store.commit(batch)
        store.close()
        RaftStore(data, 1 << 20).close()
    finally:
        os.umask(old_umask)
    modes = _modes(data)
    assert "broker.lmdb/data.mdb" in modes and "raft.lmdb/data.mdb" in modes
    for name, mode in modes.items():
        expected = 0o700 if (data / name).is_dir() else 0o600
        assert mode == expected, f"{name} is {oct(mode)}, expected {oct(expected)}"


def test_data_directory_of_an_older_node_is_tightened_on_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    BrokerStore(data, 1 << 20).close()
    os.chmod(data, 0o755)
    os.chmod(data / "broker.lmdb", 0o755)
    os.chmod(data / "broker.lmdb" / "data.mdb", 0o644)
    BrokerStore(data, 1 << 20).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "broker.lmdb").stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "broker.lmdb" / "data.mdb").stat().st_mode) == 0o600


def test_data_directory_stays_out_of_git_status(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    BrokerStore(tmp_path / "warren-data", 1 << 20).close()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    assert status == ""
