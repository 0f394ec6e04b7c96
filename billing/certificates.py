"""Transaction certificates (数据交易凭证): proof of a purchase that anyone can check.

A certificate states the parties, the dataset version and its content SHA-256, the amount and
the time. Its ``digest`` is the SHA-256 of that statement's canonical JSON (sorted keys, compact,
UTF-8), and its ``signature`` an HMAC-SHA256 of the digest under the platform's certificate key.
The verification page recomputes both: an edited certificate, or one the platform never issued,
fails.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.accounts.models import Organization
from market.catalog.models import DatasetVersion
from market.db import utcnow
from billing.models import Certificate, Order, OrderLine
from pricing.money import Money


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def digest_of(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(payload).encode("utf-8")).hexdigest()


def sign(digest: str, key: bytes) -> str:
    return hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()


def issue(session: Session, order: Order, line: OrderLine, key: bytes) -> Certificate:
    """The certificate of one paid line (issued once; a second call returns it)."""
    existing = session.scalar(select(Certificate).where(Certificate.order_line_id == line.id))
    if existing is not None:
        return existing
    buyer = session.get(Organization, order.organization_id)
    version = session.get(DatasetVersion, line.version_id) if line.version_id else None
    dataset = version.dataset if version is not None else None
    seller = dataset.organization if dataset is not None else None
    number = f"TC-{utcnow():%Y%m%d}-{secrets.token_hex(5).upper()}"
    payload = {
        "number": number,
        "issued_at": utcnow().isoformat(timespec="seconds"),
        "buyer": {"id": buyer.id, "name": buyer.name,
                  "registration_number": buyer.registration_number},
        "seller": {"id": seller.id, "name": seller.name,
                   "registration_number": seller.registration_number} if seller else None,
        "order": order.number,
        "dataset": {"id": dataset.id, "title_zh": dataset.title_zh,
                    "title_en": dataset.title_en} if dataset else None,
        "version": {"number": version.number, "content_sha256": version.content_sha256,
                    "records": version.record_count, "tokens": version.token_count}
        if version else None,
        "description": line.description,
        "amount": Money.from_minor(line.total_minor, order.currency).to_dict(),
        "paid_at": (order.paid_at or utcnow()).isoformat(timespec="seconds"),
    }
    digest = digest_of(payload)
    certificate = Certificate(number=number, order_line_id=line.id,
                              organization_id=order.organization_id, payload=payload,
                              digest=digest, signature=sign(digest, key))
    session.add(certificate)
    return certificate


@dataclass(frozen=True)
class Verification:
    valid: bool
    reason: str
    certificate: Certificate | None


def verify(session: Session, number: str, key: bytes, *,
           presented_digest: str | None = None) -> Verification:
    """Check a certificate by its number (and, if given, the digest printed on a copy)."""
    certificate = session.scalar(select(Certificate).where(Certificate.number == number))
    if certificate is None:
        return Verification(False, "No certificate with this number was issued.", None)
    digest = digest_of(certificate.payload)
    if digest != certificate.digest or not hmac.compare_digest(
            sign(digest, key), certificate.signature):
        return Verification(False, "The certificate's content does not match its signature.",
                            certificate)
    if presented_digest is not None and presented_digest.lower() != digest:
        return Verification(False, "The digest on this copy differs from the certificate "
                            "issued: the copy was altered.", certificate)
    return Verification(True, "Genuine: issued by the marketplace and unaltered.", certificate)
