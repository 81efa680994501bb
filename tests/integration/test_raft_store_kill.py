"""kill -9 in the middle of group commits: the store reopens holding everything reported durable."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warren.store.raft_store import RaftStore

pytestmark = pytest.mark.timeout(60)

MAP = 256 * 1024 * 1024
GROUPS = 4

# Appends batches of 1 KiB entries to several groups, compacting now and then, and prints
# "durable <group> <last index> <term>" only after persist_batch returned (fsynced).
WRITER = f"""
import sys
from warren.store.raft_store import GroupWrite, RaftStore
store = RaftStore(sys.argv[1], {MAP})
last = {{g: store.last_index(g) for g in range({GROUPS})}}
batch_no = 0
while True:
    batch_no += 1
    writes = []
    for g in range({GROUPS}):
        lo = last[g] + 1
        n = 1 + (batch_no * 7 + g) % 40
        entries = [(i, 1 + i // 500, 0, i.to_bytes(8, "big") * 128) for i in range(lo, lo + n)]
        compact = lo - 200 if batch_no % 10 == 0 and lo > 300 else None
        writes.append(GroupWrite(g, entries, hard_state=(1 + lo // 500, 1, lo - 1), compact_upto=compact))
        last[g] = lo + n - 1
    store.persist_batch(writes)
    print(" ".join(f"{{g}}:{{last[g]}}" for g in range({GROUPS})), flush=True)
"""


def run_and_kill(data_dir: Path, after_seconds: float) -> dict[int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    durable: dict[int, int] = {}
    deadline = time.monotonic() + after_seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "the writer died on its own"
        durable = {int(g): int(i) for g, i in (part.split(":") for part in line.split())}
    proc.send_signal(signal.SIGKILL)
    # Lines printed before the kill also report durable writes.
    for line in proc.stdout:
        durable = {int(g): int(i) for g, i in (part.split(":") for part in line.split())}
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return durable


def test_sigkill_mid_write_loses_nothing_reported_durable(tmp_path: Path) -> None:
    for round_no, after in enumerate([0.4, 0.7, 0.5]):
        durable = run_and_kill(tmp_path, after)
        assert durable, "no batch was reported durable before the kill"
        store = RaftStore(tmp_path, MAP)
        try:
            for group, reported in durable.items():
                last = store.last_index(group)
                assert last >= reported, (
                    f"round {round_no}: group {group} lost entries {last + 1}..{reported}"
                )
                first = store.first_index(group)
                held = store.entries(group, first, last + 1)
                assert [e[0] for e in held] == list(range(first, last + 1))
                assert all(
                    e[3] == e[0].to_bytes(8, "big") * 128 and e[1] == 1 + e[0] // 500 for e in held
                )
                term, _, commit = store.hard_state(group)
                assert commit >= reported - 40 and term >= 1
        finally:
            store.close()
