"""Certificate expiry dates read by the health check, against certificates made by `cryptography`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from warren.api.certificates import CertificateError, pem_expiry_dates


def certificate(not_after: datetime, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "warren-test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_reads_utctime_and_generalizedtime_from_a_chain() -> None:
    soon = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)  # UTCTime (before 2050)
    late = datetime(2061, 1, 2, 3, 4, 5, tzinfo=UTC)  # GeneralizedTime (2050 and after)
    assert pem_expiry_dates(certificate(soon) + b"\n" + certificate(late)) == [soon, late]


def test_a_fresh_certificate_is_read_to_the_second() -> None:
    when = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    assert pem_expiry_dates(certificate(when)) == [when]


def test_garbage_is_an_error_not_a_crash() -> None:
    with pytest.raises(CertificateError):
        pem_expiry_dates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertificateError):
        pem_expiry_dates(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    assert pem_expiry_dates(b"no certificates here") == []
