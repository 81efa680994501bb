"""Loopback-only users (guest) from a real non-loopback address, over AMQP and HTTP.

A network namespace joined to this one by a veth pair gives a real second address: the
node runs inside the namespace bound to 0.0.0.0 (so nothing listens on this host's real
interfaces) and this test process reaches it at the namespace's veth address, arriving
from the host-side veth address, which is not loopback. Clients run inside the namespace
reach it on 127.0.0.1. Needs root and iproute2's ``ip``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
import requests

from tests.integration.conftest import HTTP, STARTUP

IP = shutil.which("ip")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or IP is None,
    reason="needs root and iproute2's `ip` to create a network namespace with a veth pair")


@dataclass
class Namespace:
    name: str
    host_address: str  # this side of the veth pair
    inner_address: str  # the namespace's side


def _ip(*args: str) -> None:
    assert IP is not None
    subprocess.run([IP, *args], check=True, capture_output=True, text=True, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.0.0.0/8 that no interface here uses, picked from the pid so parallel runs differ."""
    used = subprocess.run([str(IP), "-4", "-o", "addr"], check=True, capture_output=True, text=True).stdout
    pid = os.getpid()
    for attempt in range(64):
        index = (pid * 64 + attempt) % (1 << 22)
        subnet = ipaddress.IPv4Network((int(ipaddress.IPv4Address("10.0.0.0")) + index * 4, 30))
        if f" {subnet.network_address + 1}/" not in used and f" {subnet.network_address + 2}/" not in used:
            return subnet
    raise AssertionError("no free 10.x /30 subnet for the veth pair")


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"  # interface names: at most 15 characters
    name, host_side, inner_side = f"wl{tag}", f"wlh{tag}", f"wln{tag}"
    subnet = _free_subnet()
    host_address, inner_address = str(subnet.network_address + 1), str(subnet.network_address + 2)
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_side, "type", "veth", "peer", "name", inner_side)
        try:
            _ip("link", "set", inner_side, "netns", name)
            _ip("addr", "add", f"{host_address}/30", "dev", host_side)
            _ip("link", "set", host_side, "up")
            _ip("netns", "exec", name, "ip", "addr", "add", f"{inner_address}/30", "dev", inner_side)
            _ip("netns", "exec", name, "ip", "link", "set", inner_side, "up")
            _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
            yield Namespace(name, host_address, inner_address)
        finally:
            subprocess.run([str(IP), "link", "del", host_side], capture_output=True, timeout=30)  # and its peer
    finally:
        subprocess.run([str(IP), "netns", "del", name], capture_output=True, timeout=30)


@dataclass
class NamespacedNode:
    proc: subprocess.Popen[str]
    amqp_port: int
    http_port: int


@pytest.fixture
def node(namespace: Namespace, tmp_path: Path) -> Iterator[NamespacedNode]:
    cmd = [str(IP), "netns", "exec", namespace.name, sys.executable, "-m", "warren.cli", "server",
           "--data-dir", str(tmp_path / "data"), "--bind", "0.0.0.0", "--amqp-port", "0", "--http-port", "0",
           "--prometheus-port", "-1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 30
    started = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        amqp, http = STARTUP.search(line), HTTP.search(line)
        if amqp and http:
            started = NamespacedNode(proc, int(amqp.group(1)), int(http.group(1)))
            break
    try:
        assert started is not None, "warren server did not start in the namespace:\n" + "".join(output)
        yield started
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


INSIDE = """
import json, sys, urllib.error, urllib.request, base64
import pika
args = json.loads(sys.argv[1])
result = {}
conn = pika.BlockingConnection(pika.ConnectionParameters(
    "127.0.0.1", args["amqp_port"], "/", pika.PlainCredentials("guest", "guest")))
conn.channel().queue_declare("from-loopback")
conn.close()
result["amqp"] = "ok"
token = base64.b64encode(b"guest:guest").decode()
for method, path, body in args["requests"]:
    request = urllib.request.Request(f"http://127.0.0.1:{args['http_port']}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Basic " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read()
            result[path] = [answer.status, json.loads(raw) if raw else None]
    except urllib.error.HTTPError as error:
        result[path] = [error.code, json.loads(error.read() or b"null")]
print(json.dumps(result))
"""


def inside(namespace: Namespace, node: NamespacedNode, *calls: tuple[str, str, Any]) -> dict[str, Any]:
    """As guest from 127.0.0.1 inside the namespace: an AMQP queue.declare, then ``calls``."""
    args = json.dumps({"amqp_port": node.amqp_port, "http_port": node.http_port, "requests": calls})
    done = subprocess.run([str(IP), "netns", "exec", namespace.name, sys.executable, "-c", INSIDE, args],
                          capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_guest_is_refused_from_a_non_loopback_address_on_every_interface(namespace: Namespace,
                                                                         node: NamespacedNode) -> None:
    remote = namespace.inner_address
    api = f"http://{remote}:{node.http_port}/api"
    # AMQP: refused at login with RabbitMQ's reply
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        pika.BlockingConnection(pika.ConnectionParameters(remote, node.amqp_port, "/",
                                                          pika.PlainCredentials("guest", "guest")))
    assert "ACCESS_REFUSED - user 'guest' can only connect via localhost" in str(refused.value)
    # HTTP: refused as RabbitMQ's management API refuses it
    overview = requests.get(f"{api}/overview", auth=("guest", "guest"), timeout=10)
    assert overview.status_code == 401
    assert overview.json() == {"error": "not_authorised", "reason": "User can only log in via localhost"}
    # ... so a remote caller cannot make itself an administrator
    intruder = requests.put(f"{api}/users/intruder", json={"password": "x", "tags": "administrator"},
                            auth=("guest", "guest"), timeout=10)
    assert intruder.status_code == 401
    # a wrong password is still a failed login first, as in RabbitMQ
    wrong = requests.get(f"{api}/overview", auth=("guest", "nope"), timeout=10)
    assert wrong.status_code == 401 and wrong.json() == {"error": "not_authorized", "reason": "Login failed"}

    # from 127.0.0.1 (inside the namespace) guest works over both, and sees no intruder
    password = secrets.token_urlsafe(16)
    local = inside(namespace, node,
                   ("GET", "/api/whoami", None),
                   ("GET", "/api/users/intruder", None),
                   ("PUT", "/api/users/remote-ops", {"password": password, "tags": "administrator"}),
                   ("PUT", "/api/permissions/%2F/remote-ops", {"configure": ".*", "write": ".*", "read": ".*"}))
    assert local["amqp"] == "ok"
    assert local["/api/whoami"] == [200, {"name": "guest", "tags": ["administrator"]}]
    assert local["/api/users/intruder"][0] == 404
    assert local["/api/users/remote-ops"][0] == 201

    # a user not in loopback_users works from the remote address, over AMQP and HTTP
    conn = pika.BlockingConnection(pika.ConnectionParameters(remote, node.amqp_port, "/",
                                                             pika.PlainCredentials("remote-ops", password)))
    assert conn.channel().queue_declare("from-loopback", passive=True)
    whoami = requests.get(f"{api}/whoami", auth=("remote-ops", password), timeout=10)
    assert whoami.status_code == 200 and whoami.json()["name"] == "remote-ops"
    # the node saw this side's veth address: a real non-loopback peer
    connections = requests.get(f"{api}/connections", auth=("remote-ops", password), timeout=10).json()
    assert [c["peer_host"] for c in connections] == [namespace.host_address]
    conn.close()


LOGINS = """
import base64, json, sys, urllib.error, urllib.request
import pika
args = json.loads(sys.argv[1])
result = {}
for user, password in args["logins"]:
    try:
        pika.BlockingConnection(pika.ConnectionParameters(
            args["host"], args["amqp_port"], "/", pika.PlainCredentials(user, password))).close()
        amqp = "ok"
    except pika.exceptions.AMQPConnectionError as error:
        amqp = str(error)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"http://{args['host']}:{args['http_port']}/api/whoami",
                                     headers={"Authorization": "Basic " + token})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            http = [answer.status, json.loads(answer.read())]
    except urllib.error.HTTPError as error:
        http = [error.code, json.loads(error.read())]
    result[user] = {"amqp": amqp, "http": http}
print(json.dumps(result))
"""


def test_every_loopback_user_is_refused_from_elsewhere_not_only_guest(namespace: Namespace) -> None:
    """The node in this namespace on the host-side veth address, the clients in the namespace."""
    from warren.embed import run_node

    with run_node(http_port=0, bind=namespace.host_address) as running:
        def add_users() -> None:
            broker = running.runtime.node.broker  # type: ignore[union-attr]
            for user in ("ops", "app"):
                broker.add_user(user, f"{user}-pw", ["administrator"])
                broker.set_permissions(user, "/", ".*", ".*", ".*")
            broker.loopback_users.add("ops")  # as RabbitMQ's loopback_users = guest, ops
        running.call(add_users)
        args = json.dumps({"host": namespace.host_address, "amqp_port": running.amqp_port,
                           "http_port": running.runtime.http_port,
                           "logins": [["guest", "guest"], ["ops", "ops-pw"], ["app", "app-pw"]]})
        done = subprocess.run([str(IP), "netns", "exec", namespace.name, sys.executable, "-c", LOGINS, args],
                              capture_output=True, text=True, timeout=60, env=os.environ)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
    refused_http = [401, {"error": "not_authorised", "reason": "User can only log in via localhost"}]
    for user in ("guest", "ops"):
        assert f"ACCESS_REFUSED - user '{user}' can only connect via localhost" in seen[user]["amqp"]
        assert seen[user]["http"] == refused_http
    assert seen["app"] == {"amqp": "ok", "http": [200, {"name": "app", "tags": ["administrator"]}]}
