"""Transaction certificates (数据交易凭证): proof of a purchase that anyone can check.

A certificate states the parties, the dataset version and its content SHA-256, the amount and
the time. Its ``digest`` is the SHA-256 of that statement's canonical JSON (sorted keys, compact,
UTF-8), and its ``signature`` an HMAC-SHA256 of the digest under the platform's certificate key.
The verification page recomputes both: an edited certificate, or one the platform never issued,
fails.

What a verification shows depends on who asks. Anyone with the number sees what proves the
transaction: the number, the dataset version's content SHA-256, the amount, the dates, the digest
and the signature. The parties' names and registration numbers, the order and what was bought
are shown only to a signed-in member (or a key) of the buyer or the seller: a certificate number
passed around must not tell a stranger who bought what.
"""

from __future__ import annotations

import datetime as dt
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
from market.core.db import utcnow
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
class CertificateView:
    """A certificate as shown to one viewer: ``payload`` is all of it for a party, the proof
    alone for anyone else (``disclosure`` says which)."""

    number: str
    payload: dict[str, Any]
    digest: str
    signature: str
    issued_at: dt.datetime
    disclosure: str  # "party" or "public"


@dataclass(frozen=True)
class Verification:
    valid: bool
    reason: str
    certificate: CertificateView | None


def parties(payload: dict[str, Any]) -> set[int]:
    """The organizations a certificate names: its buyer and its seller."""
    return {party["id"] for party in (payload.get("buyer"), payload.get("seller"))
            if isinstance(party, dict) and party.get("id") is not None}


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """What proves the transaction, without saying who took part or what they bought."""
    version = payload.get("version") or {}
    return {"number": payload.get("number"), "issued_at": payload.get("issued_at"),
            "paid_at": payload.get("paid_at"), "amount": payload.get("amount"),
            "version": {"content_sha256": version.get("content_sha256")} if version else None}


def view_for(certificate: Certificate, viewer_organization_ids: frozenset[int]) -> CertificateView:
    party = bool(parties(certificate.payload) & viewer_organization_ids)
    return CertificateView(
        number=certificate.number,
        payload=certificate.payload if party else public_payload(certificate.payload),
        digest=certificate.digest, signature=certificate.signature,
        issued_at=certificate.issued_at, disclosure="party" if party else "public")


def verify(session: Session, number: str, key: bytes, *, presented_digest: str | None = None,
           viewer_organization_ids: frozenset[int] = frozenset()) -> Verification:
    """Check a certificate by its number (and, if given, the digest printed on a copy).

    The certificate comes back as the viewer may see it (``view_for``): whole for a member of a
    party, the proof alone for anyone else.
    """
    certificate = session.scalar(select(Certificate).where(Certificate.number == number))
    if certificate is None:
        return Verification(False, "No certificate with this number was issued.", None)
    shown = view_for(certificate, viewer_organization_ids)
    digest = digest_of(certificate.payload)
    if digest != certificate.digest or not hmac.compare_digest(
            sign(digest, key), certificate.signature):
        return Verification(False, "The certificate's content does not match its signature.",
                            shown)
    if presented_digest is not None and presented_digest.lower() != digest:
        return Verification(False, "The digest on this copy differs from the certificate "
                            "issued: the copy was altered.", shown)
    return Verification(True, "Genuine: issued by the marketplace and unaltered.", shown)
