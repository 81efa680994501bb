"""TLS on the cluster port, with a CA and certificates the test generates: peers that hold
certificates of the cluster's CA talk; a certificate of another CA, or no TLS at all, is
refused with a log line on each side."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from warren.errors import ConfigError
from warren.io.peer import PeerTLS, PeerTransport, peer_tls
from warren.limits import Limits

pytestmark = pytest.mark.timeout(30)

LIMITS = Limits(peer_reconnect_min_seconds=0.02, peer_reconnect_max_seconds=0.1,
                peer_handshake_timeout_seconds=1.0)


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_ca(directory: Path, label: str) -> tuple[Any, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(label)).issuer_name(_name(label))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{label}-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_node_cert(directory: Path, ca_key: Any, ca_cert: x509.Certificate, label: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(label)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{label}.pem", directory / f"{label}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def transport(node_id: int, peer: int, tls: PeerTLS | None, inbox: list[Any]) -> PeerTransport:
    return PeerTransport(node_id, ("127.0.0.1", 0), {peer: ("127.0.0.1", 1)}, b"secret",
                         lambda frm, msg: inbox.append((frm, msg)), LIMITS, random.Random(node_id), tls=tls)


async def connect(a: PeerTransport, b: PeerTransport) -> None:
    await a.start_listening()
    await b.start_listening()
    a.set_peer_address(2, ("127.0.0.1", b.port))
    b.set_peer_address(1, ("127.0.0.1", a.port))
    a.start_dialing()
    b.start_dialing()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca_key, ca_cert, ca_path = make_ca(tmp_path, "cluster")
    rogue_key, rogue_cert, _ = make_ca(tmp_path, "rogue")
    return {
        "ca": ca_path,
        "n1": make_node_cert(tmp_path, ca_key, ca_cert, "n1"),
        "n2": make_node_cert(tmp_path, ca_key, ca_cert, "n2"),
        "rogue": make_node_cert(tmp_path, rogue_key, rogue_cert, "rogue"),
    }


async def test_members_of_the_cluster_ca_talk_over_tls(pki: dict[str, Any]) -> None:
    inbox_a: list[Any] = []
    inbox_b: list[Any] = []
    a = transport(1, 2, peer_tls(*map(str, pki["n1"]), str(pki["ca"])), inbox_a)
    b = transport(2, 1, peer_tls(*map(str, pki["n2"]), str(pki["ca"])), inbox_b)
    await connect(a, b)
    try:
        await asyncio.wait_for(a.wait_for(lambda: a.connected_to() == {2}), 10)
        a.send(2, ["hello", 1])
        await asyncio.wait_for(b.wait_for(lambda: b.connected_to() == {1}), 10)
        b.send(1, ["hi", 2])
        for _ in range(200):
            if inbox_a and inbox_b:
                break
            await asyncio.sleep(0.01)
        assert inbox_b == [(1, ["hello", 1])] and inbox_a == [(2, ["hi", 2])]
        writer = a._outbound[2].writer
        assert writer is not None
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object is not None and ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize("intruder", ["other-ca", "plaintext"])
async def test_a_peer_without_a_cluster_certificate_is_refused_and_both_sides_say_so(
    pki: dict[str, Any], intruder: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="warren.peer")
    inbox_a: list[Any] = []
    inbox_b: list[Any] = []
    a = transport(1, 2, peer_tls(*map(str, pki["n1"]), str(pki["ca"])), inbox_a)
    # The intruder knows the shared secret; only its certificate is wrong (or missing).
    rogue_tls = peer_tls(*map(str, pki["rogue"]), str(pki["ca"])) if intruder == "other-ca" else None
    b = transport(2, 1, rogue_tls, inbox_b)
    await connect(a, b)
    try:
        for _ in range(30):
            b.send(1, ["let me in"])
            await asyncio.sleep(0.02)
        assert inbox_a == []
        assert a.refused_connections > 0
        lines = [r.getMessage() for r in caplog.records]
        # node 1's listener refuses the intruder's dial, once per cause rather than per retry
        refusals = [line for line in lines if "refused a peer connection" in line]
        assert refusals and "TLS failed" in refusals[0]
        assert len(refusals) <= 2, refusals
        if intruder == "other-ca":
            # node 1's dialer will not trust the intruder's listener either...
            assert sum("TLS with peer 2" in line and "CERTIFICATE_VERIFY_FAILED" in line
                       for line in lines) == 1
            # ...and the intruder's dialer hears that node 1 refused it, once
            assert sum("peer 1 at" in line and "trust this node's certificate" in line
                       for line in lines) == 1, lines
    finally:
        await a.stop()
        await b.stop()


def test_unreadable_tls_files_are_a_config_error_naming_the_fix(tmp_path: Path, pki: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="certificate, key and CA paths"):
        peer_tls(str(tmp_path / "missing.pem"), str(pki["n1"][1]), str(pki["ca"]))
