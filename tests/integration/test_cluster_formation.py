"""Forming and changing a cluster of real `warren server` processes over loopback TCP.

Three nodes form from seeds and agree on members and leader; kill -9 one and the others see
it suspect, then dead; it restarts without seeds and catches up; a fourth joins meanwhile
and leaves gracefully; a wrong secret, a duplicate name and an unreachable seed each end
the joiner with a non-zero exit and a message naming the fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.integration.cluster_procs import (
    DEAD_AFTER,
    JOIN_TIMEOUT,
    SUSPECT_AFTER,
    Member,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


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
