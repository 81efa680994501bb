"""A store write that fails (a really full disk) nacks what it covered and the node recovers.

The data directory is on a small tmpfs; `--disk-free-limit 0` keeps the free-space alarm out of
the way, so what is tested is the failing write itself (ENOSPC from LMDB's commit).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.integration.conftest import ServerProcess, start_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                                reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(path: Path) -> None:
    """Write zeros until the file system refuses more."""
    chunk = b"\0" * 65536
    with contextlib.suppress(OSError), open(path, "wb", buffering=0) as filler:  # unbuffered: no flush at close
        while True:
            filler.write(chunk)


def _alarms_status(server: ServerProcess) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/api/health/checks/alarms", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait(predicate, timeout: float, conn: pika.BlockingConnection | None = None) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if conn is not None:
            conn.process_data_events(time_limit=0.2)
        else:
            time.sleep(0.2)
    return predicate()


@pytest.mark.timeout(90)
def test_failed_commit_nacks_then_node_confirms_again_once_space_is_freed(small_disk: Path) -> None:
    server = start_server(small_disk / "data", "--disk-free-limit", "0")
    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        events: list[str] = []
        conn.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
        conn.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("q", durable=True)
        persistent = pika.BasicProperties(delivery_mode=2)
        for i in range(3):
            ch.basic_publish("", "q", f"before-{i}".encode(), persistent)
        assert _alarms_status(server) == 200

        filler = small_disk / "filler"
        _fill(filler)
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", "q", os.urandom(512 * 1024), persistent)
        # the failing disk is an alarm: publishers are blocked and the health check says so
        assert _wait(lambda: "blocked" in events, 10, conn), events
        assert _alarms_status(server) == 503
        body = json.loads(urllib.request.urlopen(  # noqa: S310 - loopback test node
            urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/nodes",
                                   headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}), timeout=5).read())
        assert body[0]["disk_free_alarm"] is True

        filler.unlink()
        assert _wait(lambda: "unblocked" in events, 15, conn), events
        assert _alarms_status(server) == 200
        for i in range(3):
            ch.basic_publish("", "q", f"after-{i}".encode(), persistent)  # acked again: no NackError
        conn.close()
    finally:
        server.kill()

    # every confirmed message survived kill -9; the nacked one was retried and may be there too
    server = start_server(small_disk / "data", "--disk-free-limit", "0")
    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        ch = conn.channel()
        bodies = []
        while True:
            method, _, body = ch.basic_get("q", auto_ack=True)
            if method is None:
                break
            bodies.append(body)
        conn.close()
        small = [b for b in bodies if len(b) < 100]
        assert small == [b"before-0", b"before-1", b"before-2", b"after-0", b"after-1", b"after-2"]
    finally:
        server.kill()


@pytest.mark.timeout(90)
def test_a_declare_whose_write_fails_is_not_applied_in_memory(small_disk: Path) -> None:
    server = start_server(small_disk / "data", "--disk-free-limit", "0")
    auth = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q=", "Content-Type": "application/json"}

    def put_queue(name: str) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/queues/%2F/{name}",
                                         data=b'{"durable": true}', method="PUT", headers=auth)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback test node
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        conn.channel().queue_declare("kept", durable=True)
        filler = small_disk / "filler"
        _fill(filler)
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            for i in range(200):  # LMDB reuses freed pages at first; it runs out within a few
                ch.queue_declare(f"lost-{i}" + "x" * 200, durable=True)
        assert closed.value.reply_code == 541
        assert "not stored" in closed.value.reply_text
        assert put_queue("lost-http") == 503
        assert _alarms_status(server) == 503

        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        failed_name = None
        for i in range(200):
            try:
                conn.channel().queue_declare(f"lost-{i}" + "x" * 200, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                assert exc.reply_code == 404  # the declare that was not stored left nothing
                failed_name = f"lost-{i}"
                break
        assert failed_name is not None
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            conn.channel().queue_declare("lost-http", passive=True)

        filler.unlink()
        assert _wait(lambda: _alarms_status(server) == 200, 15)
        assert put_queue("after") == 201
        conn.channel().queue_declare("after-amqp", durable=True)
        expected = {q["name"] for q in json.loads(urllib.request.urlopen(  # noqa: S310
            urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/queues/%2F", headers=auth),
            timeout=5).read())}
        conn.close()
    finally:
        server.kill()

    assert {"kept", "after", "after-amqp"} <= expected and "lost-http" not in expected
    server = start_server(small_disk / "data", "--disk-free-limit", "0")
    try:
        listed = json.loads(urllib.request.urlopen(  # noqa: S310
            urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/queues/%2F", headers=auth),
            timeout=5).read())
        assert {q["name"] for q in listed} == expected  # memory and disk agree
    finally:
        server.kill()
