"""Real network partitions between local nodes: each node in its own network namespace.

A bridge in the root namespace (``wch<id>``, address ``10.A.B.254/24``) links one veth per
node; node *i* lives in namespace ``warren-<id>-<i>`` as ``10.A.B.i``. Clients in the root
namespace reach every node through the bridge, always: a partition only cuts node-to-node
traffic. It is an nftables table (``inet warren_chaos``) in each cut-off node's namespace
that drops packets from and to the nodes on the other side, so TCP between them stalls as it
does when a switch fails (nothing is refused, nothing is reset); healing deletes the tables.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); :func:`NetLab.create` says which is
missing. The record (:meth:`NetLab.as_dict`) goes into ``cluster.json`` so that ``warren
cluster down`` removes namespaces and bridge even after a crashed ``warren chaos``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

TABLE = "warren_chaos"
BRIDGE_HOST = 254  # the bridge's (the clients') address in the /24


class NetLabError(Exception):
    """The namespaces cannot be made (not root, a tool missing, a command refused)."""


def _run(*command: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(command), input=stdin, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetLabError(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _used_networks() -> list[ipaddress.IPv4Network]:
    listed = json.loads(_run("ip", "-j", "-4", "addr").stdout or "[]")
    return [ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for link in listed for a in link.get("addr_info", [])]


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise NetLabError("no free 10.200-249.x.0/24 subnet for the chaos bridge")


@dataclass
class NetLab:
    lab_id: str
    subnet: str
    nodes: list[str]  # node names, in address order (node i is .i+1)
    cut: dict[str, list[str]] = field(default_factory=dict)  # node -> the nodes it cannot reach now

    @property
    def bridge(self) -> str:
        return f"wch{self.lab_id}"

    def host(self, node: str) -> str:
        network = ipaddress.IPv4Network(self.subnet)
        return str(network.network_address + self.nodes.index(node) + 1)

    def namespace(self, node: str) -> str:
        return f"warren-{self.lab_id}-{self.nodes.index(node) + 1}"

    @classmethod
    def create(cls, nodes: list[str]) -> NetLab:
        missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
        if os.geteuid() != 0:
            raise NetLabError("network partitions need root (network namespaces and nftables rules)")
        if missing:
            raise NetLabError(f"network partitions need {' and '.join(missing)}: apt-get install "
                              + " ".join({"ip": "iproute2", "nft": "nftables"}[t] for t in missing))
        lab = cls(secrets.token_hex(3), str(_free_subnet()), list(nodes))
        try:
            lab._build()
        except BaseException:
            lab.destroy()
            raise
        return lab

    def _build(self) -> None:
        network = ipaddress.IPv4Network(self.subnet)
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{network.network_address + BRIDGE_HOST}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for index, node in enumerate(self.nodes, start=1):
            namespace, veth = self.namespace(node), f"wcv{self.lab_id}{index}"
            _run("ip", "netns", "add", namespace)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            _run("ip", "link", "set", veth, "master", self.bridge, "up")
            _run("ip", "-n", namespace, "addr", "add", f"{self.host(node)}/24", "dev", "eth0")
            _run("ip", "-n", namespace, "link", "set", "eth0", "up")
            _run("ip", "-n", namespace, "link", "set", "lo", "up")

    def partition(self, reach: dict[str, set[str]]) -> None:
        """Cut every node off from the nodes not in its ``reach`` (which must be symmetric:
        if a reaches b, b reaches a); a node missing from ``reach`` is cut off from all."""
        self.heal()
        for node in self.nodes:
            seen = reach.get(node, set()) | {node}
            cut = [other for other in self.nodes if other not in seen]
            if cut:
                self._cut(node, cut)

    def _cut(self, node: str, others: list[str]) -> None:
        addresses = ", ".join(self.host(other) for other in others)
        rules = (f"table inet {TABLE} {{\n"
                 f"  chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {addresses} }} drop; }}\n"
                 f"  chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {addresses} }} drop; }}\n"
                 "}\n")
        _run("ip", "netns", "exec", self.namespace(node), "nft", "-f", "-", stdin=rules)
        self.cut[node] = others

    def heal(self) -> None:
        for node in list(self.cut):
            _run("ip", "netns", "exec", self.namespace(node), "nft", "delete", "table", "inet", TABLE, check=False)
            del self.cut[node]

    def destroy(self) -> None:
        """Remove the namespaces (their veths go with them) and the bridge; harmless twice."""
        for index, node in enumerate(self.nodes, start=1):
            _run("ip", "link", "delete", f"wcv{self.lab_id}{index}", check=False)  # else it goes later, with the netns
            _run("ip", "netns", "delete", self.namespace(node), check=False)
        _run("ip", "link", "delete", self.bridge, check=False)
        self.cut.clear()

    def as_dict(self) -> dict[str, Any]:
        return {"lab_id": self.lab_id, "subnet": self.subnet, "nodes": self.nodes}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> NetLab:
        return cls(str(record["lab_id"]), str(record["subnet"]), [str(n) for n in record["nodes"]])
