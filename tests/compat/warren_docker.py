"""pytest plugin: client suites that start RabbitMQ in Docker get Warren nodes instead.

aiormq's and aio-pika's suites ask a Docker daemon for a ``mosquito/aiormq-rabbitmq``
container (``tests/docker_client.py``: ``check_docker_available``, ``DockerClient.run``,
``kill``, ``start``, ``inspect``, ``exec rabbitmqctl stop_app``). This plugin replaces that
client with one that runs ``warren server`` processes: ``run`` starts a node on free ports
(with TLS from the suite's ``tests/certs`` when port 5671 is asked for), ``kill`` sends
SIGKILL, ``stop`` and ``rabbitmqctl stop_app`` SIGTERM (clients get 320 CONNECTION_FORCED,
as from RabbitMQ), ``start`` and ``start_app`` restart the node on the same ports and data
directory. aiormq 7.2.4's sdist lacks the ``rabbitmq_container`` and ``amqp_direct_url``
fixtures, so the plugin defines them too (a suite's own conftest overrides them).

With ``WARREN_COMPAT_AMQP_PORT`` set (and ``WARREN_COMPAT_HOST``, ``WARREN_COMPAT_AMQPS_PORT``)
every container is that existing broker instead, e.g. RabbitMQ for the comparison column;
with ``WARREN_COMPAT_RABBITMQCTL`` (``rabbitmqctl -n NODE``) kill and stop become
``stop_app`` and start ``start_app`` (a close with 320 rather than a dropped socket). Load with ``-p warren_docker`` and this directory on
``PYTHONPATH``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from compat_node import TLSFiles, WarrenProcess, start_warren

_nodes: dict[str, WarrenProcess] = {}
_execs: dict[str, dict[str, Any]] = {}
_ids = itertools.count(1)
_state: dict[str, Any] = {"container_cls": None, "certs": None}


def _container(container_id: str, ports: dict[str, int], host: str = "127.0.0.1") -> Any:
    cls = _state["container_cls"]
    if cls is not None:
        return cls(id=container_id, ports=ports, host=host)
    return SimpleNamespace(id=container_id, ports=ports, host=host)


def _external() -> tuple[str, dict[str, int]] | None:
    port = os.environ.get("WARREN_COMPAT_AMQP_PORT")
    if not port:
        return None
    # aiormq's conftest builds its amqps URLs for every test: without a TLS listener, a closed
    # port (the amqps tests are deselected)
    ports = {"5672/tcp": int(port), "5671/tcp": int(os.environ.get("WARREN_COMPAT_AMQPS_PORT") or 1)}
    return os.environ.get("WARREN_COMPAT_HOST", "127.0.0.1"), ports


class WarrenDocker:
    """The subset of the suites' DockerClient they use, backed by Warren processes."""

    def __init__(self, docker_host_info: Any = None) -> None:
        self.docker_host_info = docker_host_info

    def pull(self, image: str) -> None:
        pass

    def run(self, image: str, ports: list[str], environment: dict[str, str] | None = None) -> Any:
        container_id = f"warren-{next(_ids)}"
        external = _external()
        if external is not None:
            host, mapped = external
            return _container(container_id, {p: mapped[p] for p in ports if p in mapped}, host)
        tls = _state["certs"] if "5671/tcp" in ports else None
        node = start_warren(tls=tls)
        _nodes[container_id] = node
        return _container(container_id, self._ports(node))

    @staticmethod
    def _ports(node: WarrenProcess) -> dict[str, int]:
        ports = {"5672/tcp": node.amqp_port}
        if node.tls_port is not None:
            ports["5671/tcp"] = node.tls_port
        return ports

    def _node(self, container_id: str) -> WarrenProcess:
        if container_id not in _nodes:
            raise RuntimeError(f"{container_id}: only Warren nodes this plugin started can be restarted")
        return _nodes[container_id]

    @staticmethod
    def _rabbitmqctl(container_id: str, command: str) -> bool:
        """An external RabbitMQ: kill and stop become ``rabbitmqctl stop_app``, start ``start_app``."""
        ctl = os.environ.get("WARREN_COMPAT_RABBITMQCTL")
        if container_id in _nodes or not ctl:
            return False
        subprocess.run([*ctl.split(), command], check=True, stdout=subprocess.DEVNULL)
        return True

    def start(self, container_id: str) -> None:
        if self._rabbitmqctl(container_id, "start_app"):
            return
        node = self._node(container_id)
        if not node.running():
            node.start()

    def stop(self, container_id: str, timeout: int = 10) -> None:
        if not self._rabbitmqctl(container_id, "stop_app"):
            self._node(container_id).stop(timeout=timeout)

    def kill(self, container_id: str) -> None:
        if not self._rabbitmqctl(container_id, "stop_app"):
            self._node(container_id).kill()

    def remove(self, container_id: str) -> None:
        node = _nodes.pop(container_id, None)
        if node is not None:
            node.remove()
        elif _external() is not None:
            self._rabbitmqctl(container_id, "start_app")  # leave the shared broker running

    def inspect(self, container_id: str) -> dict[str, Any]:
        external = _external()
        if container_id not in _nodes and external is not None:
            ports = external[1]
            running = True
        else:
            node = self._node(container_id)
            ports, running = self._ports(node), node.running()
        bindings = {name: [{"HostIp": "127.0.0.1", "HostPort": str(port)}] for name, port in ports.items()}
        return {"Id": container_id, "State": {"Running": running}, "NetworkSettings": {"Ports": bindings}}

    def _parse_ports(self, info: dict[str, Any]) -> dict[str, int]:
        return {name: int(bindings[0]["HostPort"])
                for name, bindings in info.get("NetworkSettings", {}).get("Ports", {}).items() if bindings}

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        parts = path.strip("/").split("/")
        if parts[0] == "containers" and parts[-1] == "exec":
            exec_id = f"exec-{next(_ids)}"
            _execs[exec_id] = {"container": parts[1], "cmd": list((body or {}).get("Cmd", [])),
                               "Running": False, "ExitCode": None}
            return {"Id": exec_id}
        if parts[0] == "exec" and parts[-1] == "start":
            entry = _execs[parts[1]]
            entry["ExitCode"] = self._exec(entry["container"], entry["cmd"])
            return None
        if parts[0] == "exec" and parts[-1] == "json":
            entry = _execs[parts[1]]
            return {"Running": entry["Running"], "ExitCode": entry["ExitCode"]}
        raise RuntimeError(f"docker API {method} {path} is not emulated for Warren")

    def _exec(self, container_id: str, cmd: list[str]) -> int:
        if cmd[:1] != ["rabbitmqctl"] or len(cmd) != 2:
            return 1
        command = os.environ.get("WARREN_COMPAT_RABBITMQCTL")
        if container_id not in _nodes and command:  # an external RabbitMQ
            return subprocess.call([*command.split(), cmd[1]])
        node = self._node(container_id)
        if cmd[1] == "stop_app":
            node.stop()  # clients get connection.close 320, as from rabbitmqctl stop_app
            return 0
        if cmd[1] == "start_app":
            if not node.running():
                node.start()
            return 0
        return 1


def _check_docker_available() -> Any:
    return SimpleNamespace(is_tcp=False, socket_path="warren", host=None, port=None,
                           container_host="127.0.0.1")


def _patch(namespace: Any) -> None:
    if hasattr(namespace, "ContainerInfo") and _state["container_cls"] is None:
        _state["container_cls"] = namespace.ContainerInfo
    if hasattr(namespace, "DockerClient"):
        namespace.DockerClient = WarrenDocker
    if hasattr(namespace, "check_docker_available"):
        namespace.check_docker_available = _check_docker_available


@pytest.hookimpl
def pytest_plugin_registered(plugin: Any, manager: Any) -> None:
    """Patch a suite's conftest and its docker_client module before they are used."""
    docker_client = getattr(plugin, "DockerClient", None)
    if docker_client is None or docker_client is WarrenDocker:
        return
    module = sys.modules.get(docker_client.__module__)
    if module is not None:
        _patch(module)
    _patch(plugin)


def pytest_configure(config: pytest.Config) -> None:
    certs = Path(config.rootpath) / "tests" / "certs"
    if (certs / "server.pem").exists() and (certs / "server.key").exists():
        ca = certs / "ca.pem"
        _state["certs"] = TLSFiles(str(certs / "server.pem"), str(certs / "server.key"),
                                   str(ca) if ca.exists() else None)
    for module in list(sys.modules.values()):
        if module is not None and getattr(module, "__name__", "").endswith("docker_client"):
            _patch(module)


def pytest_unconfigure(config: pytest.Config) -> None:
    for container_id in list(_nodes):
        _nodes.pop(container_id).remove()


@pytest.fixture(scope="session")
def rabbitmq_container() -> Any:
    return WarrenDocker().run("mosquito/aiormq-rabbitmq", ["5672/tcp", "5671/tcp"])


@pytest.fixture(scope="session")
def amqp_direct_url(rabbitmq_container: Any) -> Any:
    from yarl import URL

    return URL.build(scheme="amqp", user="guest", password="guest", path="//",
                     host=rabbitmq_container.host, port=rabbitmq_container.ports["5672/tcp"])
