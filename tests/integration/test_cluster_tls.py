"""`warren server` cluster members over mutual TLS on the cluster port, with a CA and
certificates the test generates: members of the CA form a cluster and replicate
definitions; a node without the cluster's TLS cannot join and says how to fix it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika
import pytest

from tests.integration.cluster_procs import JOIN_TIMEOUT, Member, wait_for
from tests.integration.test_peer_tls import make_ca, make_node_cert

pytestmark = pytest.mark.timeout(120)


def test_members_with_the_clusters_certificates_form_and_others_are_refused(
        make: Any, tmp_path: Path) -> None:
    ca_key, ca_cert, ca = make_ca(tmp_path, "cluster")
    members = []
    for name in ("t1", "t2"):
        cert, key = make_node_cert(tmp_path, ca_key, ca_cert, name)
        member = make(name)
        member.args += ["--cluster-tls-cert", str(cert), "--cluster-tls-key", str(key), "--cluster-tls-ca", str(ca)]
        members.append(member)
    first, second = members
    first.start()
    second.start(seeds=[first])
    wait_for(lambda: second.info()["member_count"] == 2
             and all(m["status"] == "alive" for m in second.info()["members"]), 15, "two members over TLS")
    ch = pika.BlockingConnection(pika.URLParameters(first.url)).channel()
    ch.queue_declare("over.tls", durable=True)
    ch.connection.close()
    ch = pika.BlockingConnection(pika.URLParameters(second.url)).channel()
    assert ch.queue_declare("over.tls", passive=True).method.queue == "over.tls"
    ch.connection.close()

    plain: Member = make("plain")  # the right secret, but no TLS: refused, with the fix named
    plain.start(seeds=[first], wait=False)
    assert plain.wait_exit(JOIN_TIMEOUT + 20) != 0
    assert "runs the cluster port with TLS" in plain.log() and "--cluster-tls-cert" in plain.log(), plain.log()
    wait_for(lambda: "TLS failed" in first.log() or "refused a peer connection" in first.log(), 5,
             "the seed's log line")
