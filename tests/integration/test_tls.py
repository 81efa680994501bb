"""AMQPS with a certificate the test generates."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pika
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import start_server


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_amqps_listener_accepts_verified_tls_clients(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = start_server(tmp_path / "data", "--tls-port", "0", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        line = server.output[-1]
        tls_port = int(line.split("AMQPS on 127.0.0.1:")[1].split(",")[0])
        context = ssl.create_default_context(cafile=str(cert))
        params = pika.ConnectionParameters(
            host="localhost", port=tls_port, ssl_options=pika.SSLOptions(context, "localhost"),
        )
        conn = pika.BlockingConnection(params)
        channel = conn.channel()
        channel.queue_declare("secure")
        channel.basic_publish("", "secure", b"over tls")
        method, _, body = channel.basic_get("secure", auto_ack=True)
        conn.close()
        assert body == b"over tls"
    finally:
        server.stop()
