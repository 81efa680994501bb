"""`warren ctl` against a real node (HTTP API + pika), one test per group of commands."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from typer.testing import CliRunner

from warren.cli.main import _register, app
from warren.embed import ThreadedNode, run_node

DEFINITIONS = Path(__file__).parent.parent / "data" / "rabbitmq-3.10.8-definitions.json"
_register()


@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with run_node(http_port=0) as running:
        yield running


def ctl(node: ThreadedNode, *args: str, ok: bool = True, json_out: bool = False) -> str:
    fmt = ["--formatter", "json"] if json_out else []
    result = CliRunner().invoke(app, ["ctl", "--node", str(node.http_url), *fmt, *args])
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


def rows(node: ThreadedNode, *args: str) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(ctl(node, *args, json_out=True))


def amqp(node: ThreadedNode, user: str = "guest", password: str = "guest", vhost: str = "/") -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, vhost, pika.PlainCredentials(user, password)))


def test_status_and_cluster_status(node: ThreadedNode) -> None:
    out = ctl(node, "status")
    assert "Status of node warren@localhost" in out and f"amqp:{node.amqp_port}" in out
    status = json.loads(ctl(node, "status", json_out=True))
    assert status["alarms"] == [] and status["memory_used"] > 0
    cluster = json.loads(ctl(node, "cluster_status", json_out=True))
    assert cluster["running_nodes"] == ["warren@localhost"]


def test_queue_exchange_binding_listings_and_purge_delete(node: ThreadedNode) -> None:
    conn = amqp(node)
    ch = conn.channel()
    ch.exchange_declare("ctl-x", "topic")
    ch.queue_declare("ctl-q", durable=True)
    ch.queue_bind("ctl-q", "ctl-x", "k.#")
    for _ in range(4):
        ch.basic_publish("ctl-x", "k.1", b"m")
    out = ctl(node, "list_queues")
    assert out.splitlines()[1] == "name\tmessages" and "ctl-q\t4" in out.splitlines()
    listed = rows(node, "list_queues", "name", "messages", "consumers", "type", "durable")
    assert {"name": "ctl-q", "messages": 4, "consumers": 0, "type": "classic", "durable": True} in listed
    assert {"name": "ctl-x", "type": "topic"} in rows(node, "list_exchanges")
    assert {"source_name": "ctl-x", "source_kind": "exchange", "destination_name": "ctl-q",
            "destination_kind": "queue", "routing_key": "k.#", "arguments": {}} in rows(node, "list_bindings")
    ctl(node, "purge_queue", "ctl-q")
    assert {"name": "ctl-q", "messages": 0} in rows(node, "list_queues")
    ctl(node, "delete_queue", "ctl-q")
    assert "ctl-q" not in [q["name"] for q in rows(node, "list_queues")]
    conn.close()


def test_connections_channels_consumers_and_close_connection(node: ThreadedNode) -> None:
    conn = amqp(node)
    ch = conn.channel()
    ch.queue_declare("ctl-cons")
    ch.basic_consume("ctl-cons", lambda *a: None, consumer_tag="tag-ctl")
    connections = rows(node, "list_connections", "name", "user", "state")
    assert [c["user"] for c in connections] == ["guest"] and connections[0]["state"] == "running"
    channels = rows(node, "list_channels")
    assert channels[0]["consumer_count"] == 1
    consumers = rows(node, "list_consumers")
    assert [(c["queue_name"], c["consumer_tag"], c["ack_required"]) for c in consumers] == [
        ("ctl-cons", "tag-ctl", True)]
    ctl(node, "close_connection", connections[0]["name"], "go away")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        for _ in range(50):
            conn.process_data_events(0.1)
    assert "go away" in closed.value.reply_text
    ctl(node, "delete_queue", "ctl-cons")


def test_users_vhosts_permissions(node: ThreadedNode) -> None:
    ctl(node, "add_vhost", "ctl-vh")
    assert {"name": "ctl-vh"} in rows(node, "list_vhosts")
    ctl(node, "add_user", "carol", "s3cret")
    ctl(node, "set_user_tags", "carol", "monitoring", "policymaker")
    assert {"user": "carol", "tags": ["monitoring", "policymaker"]} in rows(node, "list_users")  # as rabbitmqctl
    assert "carol\t[monitoring, policymaker]" in ctl(node, "list_users").splitlines()
    ctl(node, "set_permissions", "-p", "ctl-vh", "carol", "^carol-.*", ".*", ".*")
    # add_vhost goes through the HTTP API, which (as RabbitMQ's) gives the creating user access
    assert sorted(rows(node, "list_permissions", "-p", "ctl-vh"), key=lambda p: p["user"]) == [
        {"user": "carol", "configure": "^carol-.*", "write": ".*", "read": ".*"},
        {"user": "guest", "configure": ".*", "write": ".*", "read": ".*"}]
    table = ctl(node, "list_permissions", "-p", "ctl-vh").splitlines()
    assert table[:2] == ['Listing permissions for vhost "ctl-vh" ...', "user\tconfigure\twrite\tread"]
    assert "carol\t^carol-.*\t.*\t.*" in table
    conn = amqp(node, "carol", "s3cret", "ctl-vh")
    conn.channel().queue_declare("carol-q")
    conn.close()
    ctl(node, "change_password", "carol", "n3w")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(node, "carol", "s3cret", "ctl-vh")
    amqp(node, "carol", "n3w", "ctl-vh").close()
    ctl(node, "delete_user", "carol")
    assert "carol" not in [u["user"] for u in rows(node, "list_users")]
    ctl(node, "delete_vhost", "ctl-vh")
    assert {"name": "ctl-vh"} not in rows(node, "list_vhosts")
    assert "no vhost" in ctl(node, "delete_vhost", "ctl-vh", ok=False)


def test_policies(node: ThreadedNode) -> None:
    ctl(node, "set_policy", "limit", "^ctl-p", '{"max-length": 1}', "--apply-to", "queues", "--priority", "3")
    policies = rows(node, "list_policies")
    assert policies == [{"vhost": "/", "name": "limit", "pattern": "^ctl-p", "apply-to": "queues",
                         "definition": {"max-length": 1}, "priority": 3}]
    conn = amqp(node)
    ch = conn.channel()
    ch.queue_declare("ctl-p1")
    for _ in range(3):
        ch.basic_publish("", "ctl-p1", b"m")
    conn.close()
    assert {"name": "ctl-p1", "messages": 1, "policy": "limit"} in rows(node, "list_queues", "name", "messages", "policy")
    assert "not valid JSON" in ctl(node, "set_policy", "bad", ".*", "{oops", ok=False)
    ctl(node, "clear_policy", "limit")
    assert rows(node, "list_policies") == []
    ctl(node, "delete_queue", "ctl-p1")


def test_export_and_import_definitions(node: ThreadedNode, tmp_path: Path) -> None:
    out = ctl(node, "import_definitions", str(DEFINITIONS))
    assert "skipped quorum queue 'qqw' in vhost '/'" in out
    amqp(node, "rabbitmquser", "rabbitmqpass", "hyperion").close()
    target = tmp_path / "defs.json"
    ctl(node, "export_definitions", str(target))
    exported = json.loads(target.read_text())
    assert {"admin", "rabbitmquser", "monitor", "guest"} <= {u["name"] for u in exported["users"]}
    assert "q-classic" in {q["name"] for q in exported["queues"]}
    # importing it back skips nothing: the JSON report says so
    assert json.loads(ctl(node, "import_definitions", str(target), json_out=True)) == {"skipped_queues": []}
    with_parameter = tmp_path / "shovel.json"
    with_parameter.write_text(json.dumps({"parameters": [
        {"component": "shovel", "vhost": "/", "name": "move-it", "value": {"src-uri": "amqp://"}}]}))
    assert "skipped runtime parameter 'move-it' (shovel in vhost '/'): not supported by Warren" in \
        ctl(node, "import_definitions", str(with_parameter)).splitlines()


def test_node_down_is_one_line_naming_the_url() -> None:
    url = "http://127.0.0.1:9"
    result = subprocess.run([sys.executable, "-m", "warren.cli", "ctl", "--node", url, "list_queues"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 69
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "check that the node is running" in lines[0]
    assert f"curl {url}/api/health/checks/alarms" in lines[0]


def test_every_command_reports_a_stopped_node_in_one_line(tmp_path: Path) -> None:
    with run_node(http_port=0) as doomed:
        url = str(doomed.http_url)
        ctl(doomed, "status")  # it answers while it runs
    # the node is stopped now: each kind of command (read, write, delete, file import/export) says so
    (tmp_path / "defs.json").write_text("{}")
    commands = [
        ["status"], ["cluster_status"], ["list_queues", "name", "messages"], ["list_exchanges"], ["list_bindings"],
        ["list_connections"], ["list_channels"], ["list_consumers"], ["list_users"], ["list_vhosts"],
        ["list_permissions"], ["list_policies"], ["add_user", "u", "p"], ["delete_user", "u"],
        ["change_password", "u", "p"], ["set_user_tags", "u", "management"], ["add_vhost", "v"],
        ["delete_vhost", "v"], ["set_permissions", "u", ".*", ".*", ".*"], ["set_policy", "p", ".*", "{}"],
        ["clear_policy", "p"], ["purge_queue", "q"], ["delete_queue", "q"], ["close_connection", "c", "bye"],
        ["export_definitions", str(tmp_path / "out.json")], ["import_definitions", str(tmp_path / "defs.json")],
    ]
    for command in commands:
        result = CliRunner().invoke(app, ["ctl", "--node", url, *command])
        assert result.exit_code == 69, (command, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and url in lines[0] and "check that the node is running" in lines[0], (command, lines)
    assert not (tmp_path / "out.json").exists()


def test_user_and_password_from_flags_and_environment(node: ThreadedNode) -> None:
    ctl(node, "add_user", "dave", "d4ve")
    ctl(node, "set_user_tags", "dave", "administrator")
    flags = CliRunner().invoke(app, ["ctl", "--node", str(node.http_url), "--user", "dave", "--password", "d4ve",
                                     "--formatter", "json", "list_users"])
    assert flags.exit_code == 0, flags.output
    assert {"user": "dave", "tags": ["administrator"]} in json.loads(flags.stdout)
    env = CliRunner().invoke(app, ["ctl", "--formatter", "json", "list_vhosts"],
                             env={"WARREN_CTL_URL": str(node.http_url), "WARREN_CTL_USER": "dave",
                                  "WARREN_CTL_PASSWORD": "d4ve"})
    assert env.exit_code == 0, env.output
    assert {"name": "/"} in json.loads(env.stdout)
    # a user without the administrator tag is refused by the node: exit 70 and what to check
    ctl(node, "set_user_tags", "dave", "management")
    refused = CliRunner().invoke(app, ["ctl", "--node", str(node.http_url), "-u", "dave", "--password", "d4ve",
                                       "list_users"])
    assert refused.exit_code == 70
    assert "Not administrator user" in refused.stderr and "lacks a tag" in refused.stderr
    ctl(node, "delete_user", "dave")


def test_bad_credentials_from_env(node: ThreadedNode) -> None:
    result = CliRunner().invoke(app, ["ctl", "list_vhosts"],
                                env={"WARREN_CTL_URL": str(node.http_url), "WARREN_CTL_USER": "guest",
                                     "WARREN_CTL_PASSWORD": "wrong"})
    assert result.exit_code == 70
    assert "Login failed" in result.output and "WARREN_CTL_PASSWORD" in result.output


def _one_answer_server(answer: bytes) -> tuple[str, threading.Thread]:
    """A TCP server that answers every request with ``answer`` and closes the connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        with listener:
            listener.settimeout(10)
            try:
                while True:
                    conn, _ = listener.accept()
                    with conn:
                        conn.recv(65536)
                        conn.sendall(answer)
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread


def test_an_answer_cut_short_or_not_json_is_one_line_not_a_traceback() -> None:
    cut, _ = _one_answer_server(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n[{")
    result = CliRunner().invoke(app, ["ctl", "--node", cut, "list_queues"])
    assert result.exit_code == 69, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and cut in result.stderr
    html, _ = _one_answer_server(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>")
    result = CliRunner().invoke(app, ["ctl", "--node", html, "list_queues"])
    assert result.exit_code == 70, result.output
    assert result.stderr.strip().splitlines() == ["Error: the answer is not JSON: b'<html></html>'"]
