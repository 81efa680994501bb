from __future__ import annotations

import base64
import hashlib

import pytest

from warren.broker.auth import MD5, SHA512, Broker, check_password_hash, hash_password
from warren.errors import AMQPError, ReplyCode


def test_password_hash_is_rabbitmq_format() -> None:
    salt = b"\x90\x8d\xc6\x0a"
    encoded = hash_password("test12", salt)
    raw = base64.b64decode(encoded)
    assert raw[:4] == salt and raw[4:] == hashlib.sha256(salt + b"test12").digest()
    assert check_password_hash("test12", encoded) and not check_password_hash("test13", encoded)


def test_imported_sha512_and_md5_hashes_are_accepted() -> None:
    broker = Broker()
    salt = b"abcd"
    for algorithm, fn in ((SHA512, hashlib.sha512), (MD5, hashlib.md5)):
        encoded = base64.b64encode(salt + fn(salt + b"pw").digest()).decode()
        broker.add_user_with_hash(f"u-{algorithm}", encoded, algorithm)
        assert broker.authenticate(f"u-{algorithm}", "pw") is not None
        assert broker.authenticate(f"u-{algorithm}", "nope") is None


def test_defaults_and_salt_source() -> None:
    broker = Broker.with_defaults(salt_source=lambda n: b"\x01\x02\x03\x04")
    assert "/" in broker.vhosts
    guest = broker.authenticate("guest", "guest")
    assert guest is not None and guest.is_administrator
    assert base64.b64decode(guest.password_hash)[:4] == b"\x01\x02\x03\x04"
    assert broker.has_vhost_access("guest", "/")
    assert broker.loopback_users_only("guest") and not broker.loopback_users_only("bob")
    assert broker.authenticate("guest", "wrong") is None and broker.authenticate("nobody", "x") is None


def test_passwordless_user_cannot_log_in() -> None:
    broker = Broker()
    broker.add_user("svc", None)
    assert broker.authenticate("svc", "") is None


def refused(broker: Broker, *args: str) -> str:
    with pytest.raises(AMQPError) as info:
        broker.check_permission(*args)
    assert info.value.code == ReplyCode.ACCESS_REFUSED and not info.value.closes_connection
    return info.value.text


def test_permissions_are_unanchored_regexes_per_vhost() -> None:
    broker = Broker.with_defaults()
    broker.add_vhost("dev")
    broker.add_user("bob", "pw")
    broker.set_permissions("bob", "/", "^bob-", "", ".*")
    broker.check_permission("bob", "/", "configure", "queue", "bob-q")
    broker.check_permission("bob", "/", "read", "queue", "anything")
    assert refused(broker, "bob", "/", "configure", "queue", "q") == (
        "configure access to queue 'q' in vhost '/' refused for user 'bob'"
    )
    # an empty pattern matches nothing; the default exchange is checked as amq.default
    assert refused(broker, "bob", "/", "write", "exchange", "") == (
        "write access to exchange 'amq.default' in vhost '/' refused for user 'bob'"
    )
    assert not broker.has_vhost_access("bob", "dev")
    refused(broker, "bob", "dev", "read", "queue", "q")
    broker.clear_permissions("bob", "/")
    refused(broker, "bob", "/", "read", "queue", "q")


def test_users_and_permissions_round_trip_through_export() -> None:
    broker = Broker.with_defaults()
    broker.add_user("bob", "pw", "monitoring, policymaker")
    broker.set_permissions("bob", "/", "a", "b", "c")
    copy = Broker()
    copy.import_users(broker.export_users())
    bob = copy.authenticate("bob", "pw")
    assert bob is not None and bob.tags == ["monitoring", "policymaker"]
    copy.check_permission("bob", "/", "read", "queue", "c")
    refused(copy, "bob", "/", "read", "queue", "a")


def test_delete_user_and_vhost_drop_permissions() -> None:
    broker = Broker.with_defaults()
    broker.add_vhost("v")
    broker.set_permissions("guest", "v", ".*", ".*", ".*")
    broker.delete_vhost("v")
    assert not broker.has_vhost_access("guest", "v")
    broker.delete_user("guest")
    assert broker.authenticate("guest", "guest") is None and not broker.has_vhost_access("guest", "/")
    with pytest.raises(AMQPError):
        broker.set_permissions("ghost", "/", "", "", "")
