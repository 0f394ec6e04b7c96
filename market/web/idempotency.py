"""Idempotency-Key for POST endpoints.

The first successful response to a key is stored with a hash of its request (method, path, query
and body) in the same transaction as the request's effects: its status, body and the headers
its view set (``Location``, ``X-Tokens-*`` ...; not those every response gets, such as
``X-Request-Id``). A replay with the same request gets the stored response unchanged, plus
``Idempotent-Replayed: true``; the same key with a different request gets 422. Error responses
are not stored: they wrote nothing, so a retry is harmless. Two requests racing with one key
cannot both commit: the unique constraint turns the loser into a 409 ``idempotency_key_in_use``
with ``Retry-After`` (``market.web.http``), after which a retry gets the winner's response.

Metered data calls keep their own record instead, their usage event (``billing.metering.charge``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from market.core.db import Base, UTCDateTime, utcnow
from market.core.errors import InvalidInput

MAX_KEY_LENGTH = 255


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("organization_id", "principal", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    principal: Mapped[str] = mapped_column(String(64))  # "user:7" or "key:12"
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(500))
    # The response's other headers a replay repeats (JSON: name -> value), e.g. X-Tokens-*.
    headers: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


def request_fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"Use 1 to {MAX_KEY_LENGTH} characters.", field="Idempotency-Key")
    return key


def find(session: Session, *, organization_id: int, principal: str, key: str,
         request_hash: str) -> IdempotencyRecord | None:
    """The stored response for this key, or None; 422 when the key was used for another request."""
    record = session.scalar(select(IdempotencyRecord).where(
        IdempotencyRecord.organization_id == organization_id,
        IdempotencyRecord.principal == principal, IdempotencyRecord.key == key))
    if record is None:
        return None
    if record.expires_at <= utcnow():
        session.delete(record)
        session.flush()  # so the new response can take the key in this transaction
        return None
    if record.request_hash != request_hash:
        raise InvalidInput("This Idempotency-Key was already used with a different request.",
                           field="Idempotency-Key")
    return record


# Headers of a response that describe its body rather than what the view said.
_BODY_HEADERS = frozenset({"content-type", "content-length", "location"})


def store(session: Session, *, organization_id: int, principal: str, key: str,
          request_hash: str, status: int, content_type: str, body: str,
          headers: dict[str, str], ttl: dt.timedelta) -> None:
    """Keep a response for its replays: ``headers`` are what its view set."""
    kept = {name: value for name, value in headers.items()
            if name.lower() not in _BODY_HEADERS}
    session.add(IdempotencyRecord(
        organization_id=organization_id, principal=principal, key=key,
        request_hash=request_hash, status=status, content_type=content_type, body=body,
        location=headers.get("Location"), headers=json.dumps(kept) if kept else None,
        expires_at=utcnow() + ttl))


def replayed_headers(record: IdempotencyRecord) -> dict[str, str]:
    """The headers the stored response had, for its replay."""
    headers = json.loads(record.headers) if record.headers else {}
    if record.location:
        headers["Location"] = record.location
    return headers


def purge_expired(session: Session) -> int:
    """Delete expired records; run by the scheduler."""
    return session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utcnow())).rowcount
