"""Loopback-only users (RabbitMQ's loopback_users): decided on the peer's address."""

from __future__ import annotations

import pytest

from warren.broker.auth import Broker, is_loopback_address


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "::ffff:127.0.0.1",
                                  "::ffff:127.9.8.7", "0:0:0:0:0:0:0:1"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback_address(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.0.2.2", "128.0.0.1", "0.0.0.0", "::", "::ffff:10.0.0.1",
                                  "fe80::1%eth0", "2001:db8::1", "::127.0.0.1",  # IPv4-compatible: not mapped
                                  "localhost", "?", "", "127.0.0.1.example.com"])
def test_other_peers_are_not_loopback(host: str) -> None:
    assert not is_loopback_address(host)


def test_every_loopback_user_is_refused_from_elsewhere_and_others_are_not() -> None:
    broker = Broker(loopback_users=("guest", "ops"))
    for user in ("guest", "ops"):
        assert broker.may_log_in_from(user, "127.0.0.1") and broker.may_log_in_from(user, "::1")
        assert not broker.may_log_in_from(user, "10.1.2.3")
        assert not broker.may_log_in_from(user, "::ffff:10.1.2.3")
    assert broker.may_log_in_from("app", "10.1.2.3")


def test_no_loopback_users_lets_guest_in_from_anywhere() -> None:
    """An operator who empties loopback_users opts out, as in RabbitMQ (loopback_users = none)."""
    assert Broker(loopback_users=()).may_log_in_from("guest", "203.0.113.9")
