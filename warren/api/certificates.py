"""Expiry dates of PEM certificates, for ``/api/health/checks/certificate-expiration``.

A small DER reader (standard library only): each certificate's ``tbsCertificate.validity``
``notAfter`` (UTCTime or GeneralizedTime), which is all the health check needs. Pure.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


class CertificateError(ValueError):
    """The file holds something that is not a readable X.509 certificate."""


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``at``."""
    if at + 2 > len(data):
        raise CertificateError("truncated DER")
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            raise CertificateError("bad DER length")
        length = int.from_bytes(data[at:at + count], "big")
        at += count
    if at + length > len(data):
        raise CertificateError("truncated DER")
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        tag, body, stop = _tlv(data, start)
        found.append((tag, body, stop))
        start = stop
    return found


def _time(tag: int, text: bytes) -> datetime:
    value = text.decode("ascii")
    if tag == 0x17:  # UTCTime: YYMMDDHHMMSSZ, years 50-99 are 19xx
        year = int(value[:2])
        value = f"{1900 + year if year >= 50 else 2000 + year}{value[2:]}"
    elif tag != 0x18:  # GeneralizedTime: YYYYMMDDHHMMSSZ
        raise CertificateError("validity is not a time")
    return datetime.strptime(value, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def not_after(der: bytes) -> datetime:
    """The ``notAfter`` of one DER-encoded certificate."""
    try:
        _tag, body, end = _tlv(der, 0)
        tbs_tag, tbs_body, tbs_end = _children(der, body, end)[0]
        fields = _children(der, tbs_body, tbs_end)
        if fields and fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity
        _vtag, vbody, vend = fields[3]
        (_, _, _), (after_tag, after_body, after_end) = _children(der, vbody, vend)[:2]
        return _time(after_tag, der[after_body:after_end])
    except (IndexError, ValueError, UnicodeDecodeError) as error:
        raise CertificateError(f"not an X.509 certificate: {error}") from None


def pem_expiry_dates(pem: bytes) -> list[datetime]:
    """``notAfter`` of every certificate in a PEM file (a chain, or a CA bundle)."""
    dates = []
    for block in PEM_BLOCK.findall(pem):
        try:
            der = base64.b64decode(b"".join(block.split()), validate=True)
        except ValueError:
            raise CertificateError("bad base64 in a PEM certificate") from None
        dates.append(not_after(der))
    return dates
