"""The audit log: append-only and hash-chained.

Each entry's hash is SHA-256 over the previous entry's hash followed by the entry's canonical
JSON (sorted keys, compact, UTF-8). Changing, inserting or deleting any entry breaks every hash
after it, which ``verify_chain`` (``flask audit verify``) finds and names. Entries are written in
the same transaction as the action they record, so a rolled-back action leaves no entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator

from sqlalchemy import JSON, ForeignKey, Integer, String, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from market.core.db import Base, UTCDateTime, utcnow
from market.core.keyset import Keyset, asc, desc

GENESIS_HASH = "0" * 64
# Any constant works; it only has to be the same in every process that appends.
_CHAIN_LOCK_ID = 7_201_001


class AuditEntry(Base):
    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    # seq and prev_hash are unique: two writers that raced past the lock could not both append
    # after the same entry, so the chain can never fork.
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(64), index=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    object_type: Mapped[str | None] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    def canonical(self) -> str:
        return canonical_json({
            "seq": self.seq,
            "occurred_at": self.occurred_at.astimezone(dt.timezone.utc).isoformat(),
            "action": self.action,
            "organization_id": self.organization_id,
            "actor_user_id": self.actor_user_id,
            "actor_api_key_id": self.actor_api_key_id,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "data": self.data,
        })

    def compute_hash(self) -> str:
        return chain_hash(self.prev_hash, self.canonical())


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def chain_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Actor:
    """Who did something: a person, a machine key, or the system (both None)."""

    user_id: int | None = None
    api_key_id: int | None = None


SYSTEM = Actor()


def record(session: Session, action: str, *, actor: Actor = SYSTEM,
           organization_id: int | None = None, object_type: str | None = None,
           object_id: object = None, data: dict[str, Any] | None = None) -> AuditEntry:
    """Append one entry to the chain, inside the caller's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        # Serialize appenders across processes until this transaction ends.
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CHAIN_LOCK_ID})
    last = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (last.seq + 1, last.hash) if last else (1, GENESIS_HASH)
    entry = AuditEntry(
        seq=seq,
        occurred_at=utcnow(),
        action=action,
        organization_id=organization_id,
        actor_user_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        data=data or {},
        prev_hash=prev_hash,
    )
    entry.hash = entry.compute_hash()
    session.add(entry)
    # Flushed now so that a second record() in the same transaction sees this entry as the last.
    session.flush()
    return entry


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    entry_id: int
    reason: str


def verify_chain(session: Session, batch_size: int = 1000) -> tuple[int, ChainBreak | None]:
    """Recompute every hash in order; return how many entries were checked and the first break."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for entry in _entries_in_order(session, batch_size):
        if entry.seq != expected_seq:
            return checked, ChainBreak(entry.seq, entry.id,
                                       f"sequence gap: expected {expected_seq}")
        if entry.prev_hash != expected_prev:
            return checked, ChainBreak(entry.seq, entry.id,
                                       "previous hash does not match the entry before it")
        if entry.compute_hash() != entry.hash:
            return checked, ChainBreak(entry.seq, entry.id,
                                       "content does not match its hash (entry was altered)")
        expected_prev, expected_seq = entry.hash, entry.seq + 1
        checked += 1
    return checked, None


def entries_in_order(session: Session, batch_size: int = 1000) -> Iterator[AuditEntry]:
    """Every entry, by seq, read in batches."""
    return _entries_in_order(session, batch_size)


def _entries_in_order(session: Session, batch_size: int) -> Iterator[AuditEntry]:
    after = 0
    while True:
        batch = session.scalars(
            select(AuditEntry).where(AuditEntry.seq > after)
            .order_by(AuditEntry.seq).limit(batch_size)
        ).all()
        if not batch:
            return
        yield from batch
        after = batch[-1].seq


def organization_entries(session: Session, organization_id: int, *, action: str | None = None,
                         newest_first: bool = False) -> Keyset[AuditEntry]:
    """An organization's entries in chain order (the log page shows the newest first), read a
    page at a time; ``action`` keeps one kind."""
    statement = select(AuditEntry).where(AuditEntry.organization_id == organization_id)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    return Keyset(session, statement, [desc(AuditEntry.seq) if newest_first else asc(AuditEntry.seq)])
