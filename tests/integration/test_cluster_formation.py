"""Forming and changing a cluster of real `warren server` processes over loopback TCP.

Three nodes form from seeds and agree on members and leader; kill -9 one and the others see
it suspect, then dead; it restarts without seeds and catches up; a fourth joins meanwhile
and leaves gracefully; a wrong secret, a duplicate name and an unreachable seed each end
the joiner with a non-zero exit and a message naming the fix.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import HTTP, STARTUP

pytestmark = pytest.mark.timeout(120)

SECRET = "formation-test-secret"
SUSPECT_AFTER, DEAD_AFTER, JOIN_TIMEOUT = 0.5, 1.5, 3.0
LIMITS = f"""
[limits]
cluster_suspect_after_seconds = {SUSPECT_AFTER}
cluster_dead_after_seconds = {DEAD_AFTER}
cluster_join_timeout_seconds = {JOIN_TIMEOUT}
cluster_request_timeout_seconds = 3.0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Member:
    name: str
    data_dir: Path
    cluster_port: int
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    http_port: int = 0

    def start(self, seeds: list[Member] | None = None, wait: bool = True) -> None:
        cmd = [sys.executable, "-m", "warren.cli", "server", "--data-dir", str(self.data_dir),
               "--amqp-port", "0", "--http-port", "0", "--prometheus-port", "-1",
               "--node-name", self.name, "--cluster-port", str(self.cluster_port), *self.args]
        if seeds:
            cmd += ["--seeds", ",".join(f"127.0.0.1:{s.cluster_port}" for s in seeds)]
        self.output = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **self.env})
        ready = threading.Event()

        def drain() -> None:  # keeps reading, so a chatty node never blocks on a full pipe
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if STARTUP.search(line):
                    http = HTTP.search(line)
                    assert http is not None
                    self.http_port = int(http.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if wait:
            assert ready.wait(30), self.log()
            assert self.http_port, f"{self.name} did not start:\n{self.log()}"

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def log(self) -> str:
        return "".join(self.output)

    def get(self, path: str) -> Any:
        r = requests.get(f"http://127.0.0.1:{self.http_port}{path}", auth=("guest", "guest"), timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"http://127.0.0.1:{self.http_port}{path}", json=body,
                             auth=("guest", "guest"), timeout=10)

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.get("/v1/cluster/info")
        return info


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds (polled every 20 ms); fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def make(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Member]]:
    base = tmp_path_factory.mktemp("cluster")
    config = base / "limits.toml"
    config.write_text(LIMITS)
    started: list[Member] = []

    def make(name: str, secret: str = SECRET) -> Member:
        member = Member(name, base / name, free_port(), ["--config", str(config)],
                        {"WARREN_CLUSTER_SECRET": secret, "WARREN_LOG_LEVEL": "info"})
        started.append(member)
        return member

    try:
        yield make
    finally:
        for member in started:  # every process this module started dies with it
            member.kill()


@pytest.fixture(scope="module")
def trio(make: Callable[..., Member]) -> list[Member]:
    a, b, c = make("a"), make("b"), make("c")
    a.start()
    b.start(seeds=[a])
    c.start(seeds=[b])  # b is not the leader: it redirects c to a
    return [a, b, c]


def statuses(member: Member) -> dict[str, str]:
    return {m["name"]: m["status"] for m in member.info()["members"]}


def test_three_nodes_form_from_seeds_and_agree(trio: list[Member]) -> None:
    def agreed() -> bool:
        infos = [m.info() for m in trio]
        leaders = {i["leader"] for i in infos}
        return all(i["member_count"] == 3 and i["has_quorum"] for i in infos) and len(leaders) == 1 \
            and None not in leaders and all(set(statuses(m).values()) == {"alive"} for m in trio)

    wait_for(agreed, 10, "3 members alive with one leader on every node")
    info = trio[2].info()
    assert sorted(m["id"] for m in info["members"]) == [1, 2, 3]
    assert sum(m["is_leader"] for m in info["members"]) == 1
    assert all(m["voter"] for m in info["members"])
    assert {m["raft_addr"] for m in info["members"]} == {f"127.0.0.1:{m.cluster_port}" for m in trio}
    members = trio[1].get("/v1/cluster/members")
    assert [m["name"] for m in members] == ["a", "b", "c"]
    assert {"id", "addr", "raft_addr", "status", "is_leader", "last_seen_unix"} <= set(members[0])


def test_kill_suspect_dead_restart_caught_up_and_leave(trio: list[Member], make: Callable[..., Member]) -> None:
    a, b, c = trio
    victim = next(m for m in trio if not any(x["is_leader"] and x["name"] == m.name for x in a.info()["members"]))
    others = [m for m in trio if m is not victim]
    victim.kill()
    killed = time.monotonic()
    suspect = wait_for(lambda: all(statuses(m)[victim.name] in ("suspect", "dead") for m in others), 10,
                       f"{victim.name} suspect")
    dead = wait_for(lambda: all(statuses(m)[victim.name] == "dead" for m in others), 10,
                    f"{victim.name} dead") + suspect
    print(f"\nkill -9 {victim.name}: suspect after {suspect:.2f}s, dead after {dead:.2f}s "
          f"(limits {SUSPECT_AFTER}s / {DEAD_AFTER}s)")
    assert SUSPECT_AFTER * 0.8 <= suspect and DEAD_AFTER * 0.8 <= dead

    # A fourth node joins while the victim is down (3 of 4 voters up: still a quorum).
    d = make("d")
    d.start(seeds=[others[0]])
    wait_for(lambda: all(m.info()["member_count"] == 4 for m in [*others, d]), 10, "4 members")

    # The victim restarts from its own data, without seeds, and catches up (it learns of d).
    restarted_at = time.monotonic()
    victim.start()
    rejoin = wait_for(lambda: victim.info()["member_count"] == 4
                      and all(statuses(m)[victim.name] == "alive" for m in others)
                      and statuses(victim) == dict.fromkeys("abcd", "alive"), 15, "victim back")
    leader = next(m for m in [*others, d] if m.info()["raft"]["role"] == "leader")
    commit = leader.info()["raft"]["commit"]
    wait_for(lambda: victim.info()["raft"]["applied"] >= commit, 5, "victim applied the leader's commit")
    print(f"{victim.name} restarted without seeds: alive and caught up {rejoin:.2f}s after its start "
          f"({time.monotonic() - killed:.1f}s after the kill, start-up {restarted_at - killed:.1f}s in)")
    assert victim.info()["leader"] == leader.info()["leader"]

    # d leaves gracefully through its own API; every remaining node shows 3 members.
    d_id = d.info()["local_id"]
    r = d.post("/v1/cluster/leave", {"node_id": d_id})
    assert r.status_code == 204, r.text
    wait_for(lambda: all(m.info()["member_count"] == 3 for m in trio), 10, "3 members after d left")
    wait_for(lambda: all(d_id not in m.info()["raft"]["voters"] for m in trio), 10, "d out of the voters")
    wait_for(lambda: d.info()["left"], 5, "d knows it left")
    assert "removed from the cluster" in d.log()
    d.kill()


def test_wrong_secret_fails_on_both_sides(trio: list[Member], make: Callable[..., Member]) -> None:
    intruder = make("intruder", secret="not-the-secret")
    seed = trio[1]
    before = len(seed.output)
    started = time.monotonic()
    intruder.start(seeds=[seed], wait=False)
    assert intruder.wait_exit(JOIN_TIMEOUT + 20) != 0
    print(f"\nwrong secret: exit after {time.monotonic() - started:.2f}s")
    assert "shared-secret handshake" in intruder.log() and "--cluster-secret" in intruder.log()
    wait_for(lambda: any("different cluster secrets" in line for line in seed.output[before:]), 5,
             "the seed's log line")
    assert sum("different cluster secrets" in line for line in seed.output[before:]) == 1


def test_a_duplicate_name_is_refused(trio: list[Member], make: Callable[..., Member]) -> None:
    twin = make("a")
    twin.data_dir = twin.data_dir.with_name("a-twin")
    twin.start(seeds=[trio[1]], wait=False)
    assert twin.wait_exit(JOIN_TIMEOUT + 20) != 0
    assert "node name 'a' is already member 1" in twin.log() and "--node-name" in twin.log()
    wait_for(lambda: any("refused node 'a'" in m.log() for m in trio), 5, "the leader's log line")


def test_an_unreachable_seed_fails_within_the_join_timeout(make: Callable[..., Member]) -> None:
    loner = make("loner")
    nobody = Member("nobody", loner.data_dir, free_port(), [], {})
    started = time.monotonic()
    loner.start(seeds=[nobody], wait=False)
    assert loner.wait_exit(JOIN_TIMEOUT + 20) != 0
    took = time.monotonic() - started
    print(f"\nunreachable seed: exit after {took:.2f}s (join timeout {JOIN_TIMEOUT}s + start-up)")
    assert took < JOIN_TIMEOUT + 10
    assert "could not join the cluster" in loner.log() and "unreachable" in loner.log()
    assert "cluster_join_timeout_seconds" in loner.log()


def test_a_standalone_node_says_it_is_not_clustered(tmp_path: Path) -> None:
    from tests.integration.conftest import start_server

    server = start_server(tmp_path / "data")
    try:
        for method, path in (("GET", "info"), ("GET", "members"), ("POST", "leave")):
            r = requests.request(method, f"http://127.0.0.1:{server.http_port}/v1/cluster/{path}",
                                 auth=("guest", "guest"), json={"node_id": 1}, timeout=5)
            assert r.status_code == 404, r.text
            assert "start it with --cluster-secret" in r.json()["reason"]
        assert "cluster on" not in server.output[-1]
    finally:
        server.kill()
