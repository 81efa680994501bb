"""Users, passwords, permissions, and the ``Broker`` that holds vhosts and users.

Passwords are stored as RabbitMQ stores them: ``base64(salt4 + H(salt4 + utf8(password)))``
with H = SHA-256 (``rabbit_password_hashing_sha256``, the default), SHA-512 or MD5 (accepted
for imported definitions). Salts come from a caller-supplied ``salt_source(n) -> bytes``
(the node passes ``os.urandom``); without one, salts derive deterministically from the user
name and a counter, which is fine for tests and nothing else.

Permissions are RabbitMQ's three regexes per (user, vhost): configure, write, read, matched
unanchored (``re.search``) against the resource name; an empty regex matches nothing; the
default exchange is checked under the name ``amq.default``.

``Broker`` API::

    Broker(salt_source=None, limits=DEFAULT_LIMITS);  Broker.with_defaults(user, password, vhost, salt_source)
    authenticate(username, password) -> User | None;  loopback_users_only(username) -> bool
    may_log_in_from(username, peer_host) -> bool   # loopback_users, for AMQP and HTTP alike
    add_vhost(name) -> VirtualHost;  delete_vhost(name);  restore_vhost(name, definition)
    add_user(name, password, tags=()) / add_user_with_hash(...) / change_password / set_user_tags / delete_user
    set_permissions(user, vhost, configure, write, read) / clear_permissions(user, vhost)
    has_vhost_access(username, vhost) -> bool
    check_permission(user, vhost, permission, kind, name)   # 403 on refusal
    export_users() -> dict;  import_users(dict)
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from warren.broker.queue import QueueState
from warren.broker.vhost import VirtualHost
from warren.errors import access_refused, not_found, precondition_failed
from warren.limits import DEFAULT_LIMITS, Limits

SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"
_HASHES: dict[str, Callable[[bytes], Any]] = {
    SHA256: hashlib.sha256,
    SHA512: hashlib.sha512,
    MD5: hashlib.md5,
}
PERMISSIONS = ("configure", "write", "read")


def hash_password(password: str, salt: bytes, algorithm: str = SHA256) -> str:
    assert len(salt) == 4, "RabbitMQ uses 4-byte salts"
    digest = _HASHES[algorithm](salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def check_password_hash(password: str, password_hash: str, algorithm: str = SHA256) -> bool:
    if not password_hash or algorithm not in _HASHES:
        return False
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except ValueError:
        return False
    salt = raw[:4]
    if len(salt) < 4:
        return False
    return hash_password(password, salt, algorithm) == password_hash


@dataclass
class User:
    name: str
    password_hash: str
    hashing_algorithm: str = SHA256
    tags: list[str] = field(default_factory=list)

    def check_password(self, password: str) -> bool:
        return check_password_hash(password, self.password_hash, self.hashing_algorithm)

    @property
    def is_administrator(self) -> bool:
        return "administrator" in self.tags

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "password_hash": self.password_hash,
            "hashing_algorithm": self.hashing_algorithm,
            "tags": list(self.tags),
        }


@dataclass
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def allows(self, kind: str, name: str) -> bool:
        pattern = getattr(self, kind)
        return pattern != "" and _compiled(pattern).search(name) is not None


_PATTERN_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _PATTERN_CACHE.get(pattern)
    if compiled is None:
        if len(_PATTERN_CACHE) > 1024:
            _PATTERN_CACHE.clear()
        compiled = _PATTERN_CACHE[pattern] = re.compile(pattern)
    return compiled


def is_loopback_address(host: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped ::ffff:127.x.y.z, decided on the address as RabbitMQ's
    ``rabbit_net:is_loopback`` does. A name ("localhost") or an unknown peer ("?") is not an
    address, so it is not loopback: a loopback-only user is refused rather than let in."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # without an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _parse_tags(tags: Iterable[str] | str) -> list[str]:
    if isinstance(tags, str):
        return [t.strip() for t in tags.split(",") if t.strip()]
    return list(tags)


@dataclass(slots=True)
class BrokerCheckpoint:
    users: dict[str, User]
    permissions: dict[tuple[str, str], Permission]
    vhosts: dict[str, VirtualHost]


class Broker:
    def __init__(
        self,
        salt_source: Callable[[int], bytes] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        loopback_users: Iterable[str] = ("guest",),
    ) -> None:
        self.limits = limits
        self.node_name = ""  # in a cluster: this node (see set_node_name)
        # every vhost's dead letters for queues that live elsewhere, for the node to send on
        self.forward_letters: list[tuple[Any, Any]] = []
        self.vhosts: dict[str, VirtualHost] = {}
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}  # (user, vhost)
        self.loopback_users = set(loopback_users)
        self._salt_source = salt_source
        self._salt_counter = 0

    @classmethod
    def with_defaults(
        cls,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        salt_source: Callable[[int], bytes] | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Broker:
        """A broker with vhost "/" (or ``vhost``) and an administrator with full permissions."""
        broker = cls(salt_source, limits)
        broker.add_vhost(vhost)
        broker.add_user(user, password, ["administrator"])
        broker.set_permissions(user, vhost, ".*", ".*", ".*")
        return broker

    def _salt(self, username: str) -> bytes:
        if self._salt_source is not None:
            salt = self._salt_source(4)
            assert len(salt) == 4
            return salt
        self._salt_counter += 1
        return hashlib.sha256(f"{self._salt_counter}:{username}".encode()).digest()[:4]

    # ---- vhosts ----------------------------------------------------------------------

    def set_node_name(self, name: str) -> None:
        """This broker is node ``name`` of a cluster: its vhosts tell queues that live on
        other nodes from their own."""
        self.node_name = name
        for vhost in self.vhosts.values():
            self._adopt(vhost)

    def _adopt(self, vhost: VirtualHost) -> VirtualHost:
        vhost.node_name = self.node_name
        vhost.forward_letters = self.forward_letters  # one list: the node checks one place
        return vhost

    def add_vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = self._adopt(VirtualHost(name, self.limits))
        return vhost

    def delete_vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts.pop(name, None)
        if vhost is None:
            raise not_found(f"no vhost '{name}'")
        for queue in vhost.queues.values():
            queue.deleted = True
        for key in [k for k in self.permissions if k[1] == name]:
            del self.permissions[key]
        return vhost

    def restore_vhost(self, name: str, definition: dict[str, Any]) -> VirtualHost:
        vhost = self._adopt(VirtualHost.from_definition(name, definition, self.limits))
        self.vhosts[name] = vhost
        return vhost

    # ---- users -----------------------------------------------------------------------

    def new_password_hash(self, name: str, password: str) -> str:
        """A fresh salted hash of ``password`` for user ``name`` (SHA256, as RabbitMQ's default)."""
        return hash_password(password, self._salt(name))

    def add_user(self, name: str, password: str | None, tags: Iterable[str] | str = ()) -> User:
        """Create or replace a user; ``password=None`` creates one that cannot log in by password."""
        password_hash = hash_password(password, self._salt(name)) if password is not None else ""
        user = User(name, password_hash, SHA256, _parse_tags(tags))
        self.users[name] = user
        return user

    def add_user_with_hash(
        self, name: str, password_hash: str, hashing_algorithm: str = SHA256, tags: Iterable[str] | str = ()
    ) -> User:
        if hashing_algorithm not in _HASHES:
            raise precondition_failed(f"unknown hashing algorithm '{hashing_algorithm}'")
        user = User(name, password_hash, hashing_algorithm, _parse_tags(tags))
        self.users[name] = user
        return user

    def _user(self, name: str) -> User:
        user = self.users.get(name)
        if user is None:
            raise not_found(f"no user '{name}'")
        return user

    def change_password(self, name: str, password: str) -> None:
        user = self._user(name)
        user.password_hash = hash_password(password, self._salt(name))
        user.hashing_algorithm = SHA256

    def set_user_tags(self, name: str, tags: Iterable[str] | str) -> None:
        self._user(name).tags = _parse_tags(tags)

    def delete_user(self, name: str) -> None:
        self._user(name)
        del self.users[name]
        for key in [k for k in self.permissions if k[0] == name]:
            del self.permissions[key]

    def authenticate(self, username: str, password: str) -> User | None:
        user = self.users.get(username)
        if user is None or not user.check_password(password):
            return None
        return user

    def loopback_users_only(self, username: str) -> bool:
        """RabbitMQ's loopback_users: these users may connect only from localhost."""
        return username in self.loopback_users

    def may_log_in_from(self, username: str, peer_host: str) -> bool:
        """False for a loopback-only user whose peer is not a loopback address; the one answer
        AMQP and the management API both use (RabbitMQ's ``check_user_loopback``)."""
        return not self.loopback_users_only(username) or is_loopback_address(peer_host)

    # ---- permissions -----------------------------------------------------------------

    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        self._user(user)
        if vhost not in self.vhosts:
            raise not_found(f"no vhost '{vhost}'")
        for pattern in (configure, write, read):
            try:
                re.compile(pattern)
            except re.error as error:
                raise precondition_failed(f"invalid regular expression '{pattern}': {error}") from None
        self.permissions[(user, vhost)] = Permission(configure, write, read)

    def clear_permissions(self, user: str, vhost: str) -> None:
        self.permissions.pop((user, vhost), None)

    def has_vhost_access(self, username: str, vhost: str) -> bool:
        return (username, vhost) in self.permissions

    def check_permission(self, user: User | str, vhost: str, permission: str, kind: str, name: str) -> None:
        """403 unless ``user`` has ``permission`` (configure/write/read) on the resource."""
        assert permission in PERMISSIONS, permission
        username = user if isinstance(user, str) else user.name
        resource = "amq.default" if kind == "exchange" and name == "" else name
        granted = self.permissions.get((username, vhost))
        if granted is None or not granted.allows(permission, resource):
            raise access_refused(
                f"{permission} access to {kind} '{resource}' in vhost '{vhost}' refused for user '{username}'"
            )

    # ---- undoing a change -------------------------------------------------------------

    def checkpoint(self) -> BrokerCheckpoint:
        """Users, permissions and vhosts now, for ``rollback`` when a change cannot be stored."""
        return BrokerCheckpoint(
            {name: replace(user, tags=list(user.tags)) for name, user in self.users.items()},
            dict(self.permissions),
            dict(self.vhosts),
        )

    def rollback(self, checkpoint: BrokerCheckpoint) -> None:
        for name, vhost in self.vhosts.items():
            if name not in checkpoint.vhosts:
                for queue in vhost.queues.values():
                    queue.deleted = True
        for name, vhost in checkpoint.vhosts.items():
            if name not in self.vhosts:  # deleted since: its queues come back with it
                for queue in vhost.queues.values():
                    queue.deleted = False
        self.users = dict(checkpoint.users)
        self.permissions = dict(checkpoint.permissions)
        self.vhosts = dict(checkpoint.vhosts)

    # ---- export ----------------------------------------------------------------------

    def export_users(self) -> dict[str, Any]:
        return {
            "users": [u.as_dict() for u in self.users.values()],
            "permissions": [
                {"user": u, "vhost": v, "configure": p.configure, "write": p.write, "read": p.read}
                for (u, v), p in self.permissions.items()
            ],
            "vhosts": list(self.vhosts),
        }

    def export_state(self) -> dict[str, Any]:
        """Every definition (users, permissions, vhosts with all their exchanges, queues,
        bindings and policies): plain data, as the metadata group snapshots it."""
        return {"users": self.export_users(), "vhosts": {n: v.export_all() for n, v in self.vhosts.items()}}

    def restore_state(self, state: dict[str, Any]) -> list[QueueState]:
        """Replace every definition with ``state`` (from ``export_state``). A queue that exists
        here and there, alike, stays the same object with its messages and consumers; the
        queues that are gone are returned (marked deleted) for the caller to clean up."""
        old = self.vhosts
        self.vhosts = {}
        kept: set[int] = set()
        for name, definition in state["vhosts"].items():
            vhost = self.restore_vhost(name, definition)
            before = old.get(name)
            if before is None:
                continue
            for queue_name, queue in list(vhost.queues.items()):
                live = before.queues.get(queue_name)
                if live is not None and (live.durable, live.exclusive, live.arguments) == (
                        queue.durable, queue.exclusive, queue.arguments):
                    live.store_id = live.store_id or queue.store_id
                    vhost.queues[queue_name] = live
                    kept.add(id(live))
            vhost.reapply_policies()
        self.import_users(state["users"])
        gone = [q for v in old.values() for q in v.queues.values() if id(q) not in kept]
        for queue in gone:
            queue.deleted = True
        return gone

    def import_users(self, data: dict[str, Any]) -> None:
        """Replace users and permissions (and create listed vhosts) from ``export_users`` data
        or a RabbitMQ definitions file's users/permissions sections."""
        self.users.clear()
        self.permissions.clear()
        for name in data.get("vhosts", []):
            self.add_vhost(name if isinstance(name, str) else name["name"])
        for u in data.get("users", []):
            self.add_user_with_hash(
                u["name"], u.get("password_hash", ""),
                u.get("hashing_algorithm", SHA256), u.get("tags", []),
            )
        for p in data.get("permissions", []):
            if p["vhost"] in self.vhosts and p["user"] in self.users:
                self.permissions[(p["user"], p["vhost"])] = Permission(p["configure"], p["write"], p["read"])
