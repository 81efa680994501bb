"""Management API endpoints and fields a real client suite uses (amqpstorm 3.1.4's functional
tests, which pass against RabbitMQ 3.10.8): the old node health check, the overview's web
contexts, users/bulk-delete, user_provided_name on connections, and the Prometheus listener."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import requests

from tests.integration.conftest import start_server
from warren.embed import ThreadedNode, run_node
from warren.limits import Limits

GUEST = ("guest", "guest")


@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with run_node(http_port=0) as running:
        yield running


def test_the_old_node_health_check(node: ThreadedNode) -> None:
    url = f"{node.http_url}/api"
    assert requests.get(f"{url}/healthchecks/node", auth=GUEST, timeout=5).json() == {"status": "ok"}
    # amqpstorm takes the node name from the overview's contexts
    node_name = requests.get(f"{url}/overview", auth=GUEST, timeout=5).json()["contexts"][0]["node"]
    named = requests.get(f"{url}/healthchecks/node/{node_name}", auth=GUEST, timeout=5)
    assert named.status_code == 200 and named.json() == {"status": "ok"}
    assert requests.get(f"{url}/healthchecks/node/nobody@nowhere", auth=GUEST, timeout=5).status_code == 404
    assert requests.get(f"{url}/healthchecks/node", timeout=5).status_code == 401  # as RabbitMQ: a user call


def test_the_old_node_health_check_fails_during_an_alarm() -> None:
    with run_node(http_port=0, limits=Limits(memory_high_watermark_bytes=1)) as alarmed:
        url = f"{alarmed.http_url}/api"
        deadline = time.monotonic() + 10
        while not requests.get(f"{url}/nodes", auth=GUEST, timeout=5).json()[0]["mem_alarm"]:
            assert time.monotonic() < deadline, "the memory alarm never came on"
            time.sleep(0.1)
        failed = requests.get(f"{url}/healthchecks/node", auth=GUEST, timeout=5)
        assert failed.status_code == 503
        assert failed.json() == {"status": "failed", "reason": "resource alarm(s) in effect: memory"}


def test_bulk_delete_of_users(node: ThreadedNode) -> None:
    url = f"{node.http_url}/api"
    names = [f"bulk-{i}" for i in range(5)]
    for name in names:
        assert requests.put(f"{url}/users/{name}", json={"password": "pw", "tags": ""}, auth=GUEST,
                            timeout=5).status_code == 201
    requests.put(f"{url}/users/bulk-mgr", json={"password": "pw", "tags": "management"}, auth=GUEST, timeout=5)
    # administrators only
    refused = requests.post(f"{url}/users/bulk-delete", json={"users": names}, auth=("bulk-mgr", "pw"), timeout=5)
    assert refused.status_code == 401 and refused.json()["reason"] == "Not administrator user"
    # bad bodies, and a name that does not exist: 400, nobody deleted
    for body in ({}, {"users": "bulk-0"}, {"users": [1]}, {"users": [*names, "bulk-nobody"]}):
        answer = requests.post(f"{url}/users/bulk-delete", json=body, auth=GUEST, timeout=5)
        assert answer.status_code == 400 and answer.json()["error"] == "bad_request", (body, answer.text)
    assert "bulk-nobody" in answer.json()["reason"]
    for name in names:
        assert requests.get(f"{url}/users/{name}", auth=GUEST, timeout=5).status_code == 200
    deleted = requests.post(f"{url}/users/bulk-delete", json={"users": names[:3]}, auth=GUEST, timeout=5)
    assert deleted.status_code == 204
    assert [requests.get(f"{url}/users/{n}", auth=GUEST, timeout=5).status_code for n in names] == \
        [404, 404, 404, 200, 200]
    # what amqpstorm's ManagementApi.user.delete(list) sends
    assert requests.post(f"{url}/users/bulk-delete", data=json.dumps({"users": names[3:]}), auth=GUEST,
                         headers={"Content-Type": "application/json"}, timeout=5).status_code == 204
    requests.delete(f"{url}/users/bulk-mgr", auth=GUEST, timeout=5)


def test_connections_show_the_clients_connection_name(node: ThreadedNode) -> None:
    url = f"{node.http_url}/api"
    named = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, client_properties={"connection_name": "orders-worker"}))
    plain = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    try:
        deadline = time.monotonic() + 10
        while len(listed := requests.get(f"{url}/connections", auth=GUEST, timeout=5).json()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        by_name = {c.get("user_provided_name"): c for c in listed}
        assert set(by_name) == {"orders-worker", None}  # the key only when the client gave one
        assert "user_provided_name" not in by_name[None]
        one = requests.get(f"{url}/connections/{requests.utils.quote(by_name['orders-worker']['name'], safe='')}",
                           auth=GUEST, timeout=5).json()
        assert one["user_provided_name"] == "orders-worker"
    finally:
        named.close()
        plain.close()


def test_overview_contexts_and_listeners_only_for_monitors(node: ThreadedNode) -> None:
    url = f"{node.http_url}/api"
    port = int(str(node.http_url).rsplit(":", 1)[1])
    overview = requests.get(f"{url}/overview", auth=GUEST, timeout=5).json()
    assert overview["contexts"] == [{"ssl_opts": [], "node": "warren@localhost", "description": "RabbitMQ Management",
                                     "path": "/", "cowboy_opts": "[{sendfile,false}]", "port": str(port)}]
    requests.put(f"{url}/users/ctx-mgr", json={"password": "pw", "tags": "management"}, auth=GUEST, timeout=5)
    try:
        as_manager = requests.get(f"{url}/overview", auth=("ctx-mgr", "pw"), timeout=5).json()
        assert "contexts" not in as_manager and "listeners" not in as_manager  # as RabbitMQ
        assert as_manager["object_totals"]["queues"] >= 0
    finally:
        requests.delete(f"{url}/users/ctx-mgr", auth=GUEST, timeout=5)


def test_the_prometheus_listener_is_listed_where_rabbitmqs_is(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", "--prometheus-port", "0")
    try:
        match = re.search(r"Prometheus on [^:]+:(\d+)", "".join(server.output))
        assert match, server.output
        prometheus = int(match.group(1))
        assert b"rabbitmq_" in requests.get(f"http://127.0.0.1:{prometheus}/metrics", timeout=5).content
        url = f"http://127.0.0.1:{server.http_port}"
        overview = requests.get(f"{url}/api/overview", auth=GUEST, timeout=5).json()
        assert {"node": "warren@localhost", "protocol": "http/prometheus", "port": prometheus,
                "ip_address": "127.0.0.1"} in overview["listeners"]
        assert {"ssl_opts": [], "node": "warren@localhost", "description": "RabbitMQ Prometheus", "path": "/",
                "cowboy_opts": "[{sendfile,false}]", "port": str(prometheus),
                "protocol": "http/prometheus"} in overview["contexts"]
        assert [c["description"] for c in overview["contexts"]] == ["RabbitMQ Management", "RabbitMQ Prometheus"]
        assert requests.get(f"{url}/api/health/checks/port-listener/{prometheus}", timeout=5).status_code == 200
        status = subprocess.run([sys.executable, "-m", "warren.cli", "ctl", "--node", url, "status"],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert f"http/prometheus:{prometheus}" in status.stdout and f"http:{server.http_port}" in status.stdout
    finally:
        server.stop()
