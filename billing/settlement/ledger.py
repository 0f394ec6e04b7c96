"""The double-entry ledger: every money movement is one balanced transaction.

Accounts belong to a purpose, a currency and (for most purposes) an organization:

==================  ==========  ===========================================================
purpose             normal      what it holds
==================  ==========  ===========================================================
buyer_receivable    debit       what a buyer owes (an invoice issued, not yet paid)
buyer_prepaid       credit      what a buyer has paid in advance (token packs, credit)
platform_clearing   debit       money received by the platform and not yet paid out
participant_payable credit      what the marketplace owes a supply-chain participant
platform_revenue    credit      the platform's own share
tax_payable         credit      VAT collected, owed to the tax authority
payout_clearing     credit      payouts sent to participants, not yet confirmed
==================  ==========  ===========================================================

Amounts are integer minor units; a debit is positive and a credit negative, so every
transaction's entries sum to zero per currency, and so do all accounts together. Entries are
never changed or deleted (their models refuse to flush such a change): a correction is a new
transaction. Posting is idempotent by ``idempotency_key``: the same key with the same entries
returns the first transaction, with different entries it is refused.

Each transaction is sealed when posted: ``seal`` is SHA-256 over the canonical JSON of its
kind, key, reference, memo, time and entries (each with its account's purpose, owner and
currency), so a change made behind the application (raw SQL on the tables) shows as a
transaction that no longer matches its seal. Signed checkpoints (``billing.settlement.checkpoints``) fix
the sequence of seals, so re-sealing a forged transaction, or deleting one, shows too; and
``billing.settlement.ledger_verify`` (``flask billing verify-ledger``) checks all of it.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import (
    JSON, BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint, event, func,
    select, text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from market.core.db import Base, UTCDateTime, utcnow
from market.core.errors import Conflict, InvalidInput
from pricing.money import Money


class Purpose(str, enum.Enum):
    BUYER_RECEIVABLE = "buyer_receivable"
    BUYER_PREPAID = "buyer_prepaid"
    PLATFORM_CLEARING = "platform_clearing"
    PARTICIPANT_PAYABLE = "participant_payable"
    PLATFORM_REVENUE = "platform_revenue"
    TAX_PAYABLE = "tax_payable"
    PAYOUT_CLEARING = "payout_clearing"


# Purposes kept once for the whole platform rather than per organization.
PLATFORM_PURPOSES = {Purpose.PLATFORM_CLEARING, Purpose.PLATFORM_REVENUE, Purpose.TAX_PAYABLE,
                     Purpose.PAYOUT_CLEARING}


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("purpose", "organization_id", "currency"),
        CheckConstraint("purpose IN ('buyer_receivable', 'buyer_prepaid', 'platform_clearing', "
                        "'participant_payable', 'platform_revenue', 'tax_payable', "
                        "'payout_clearing')", name="purpose_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    # 0 for the platform's own accounts, so the unique constraint also holds for them.
    organization_id: Mapped[int] = mapped_column(Integer, index=True)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def label(self) -> str:
        owner = "platform" if self.organization_id == 0 else f"org {self.organization_id}"
        return f"{self.purpose}:{owner}:{self.currency}"


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    # Fingerprint of the entries, to tell a replay from a different posting under the same key.
    fingerprint: Mapped[str] = mapped_column(String(64))
    reference_type: Mapped[str | None] = mapped_column(String(40))
    reference_id: Mapped[str | None] = mapped_column(String(64), index=True)
    memo: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # SHA-256 of what the transaction says (``seal_of``), written once when it is posted.
    seal: Mapped[str] = mapped_column(String(64))

    entries: Mapped[list[LedgerEntry]] = relationship(
        back_populates="transaction", order_by="LedgerEntry.id", lazy="selectin")


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (CheckConstraint("amount_minor <> 0", name="amount_not_zero"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # debit > 0, credit < 0
    currency: Mapped[str] = mapped_column(String(3))

    transaction: Mapped[LedgerTransaction] = relationship(back_populates="entries")
    account: Mapped[LedgerAccount] = relationship(lazy="joined")

    @property
    def money(self) -> Money:
        return Money.from_minor(self.amount_minor, self.currency)


@event.listens_for(LedgerEntry, "before_update")
@event.listens_for(LedgerTransaction, "before_update")
def _ledger_is_append_only(_mapper, _connection, target: LedgerEntry | LedgerTransaction
                           ) -> None:
    if Session.object_session(target).is_modified(target, include_collections=False):
        raise Conflict("Ledger entries are never changed; post a correcting transaction.")


@event.listens_for(LedgerEntry, "before_delete")
@event.listens_for(LedgerTransaction, "before_delete")
def _ledger_is_never_deleted(_mapper, _connection, _target) -> None:
    raise Conflict("Ledger entries are never changed; post a correcting transaction.")


def get_account(session: Session, purpose: Purpose, currency: str,
                organization_id: int | None = None) -> LedgerAccount:
    """The account for a purpose, currency and organization, created on first use."""
    purpose = Purpose(purpose)
    if (purpose in PLATFORM_PURPOSES) != (organization_id is None):
        raise ValueError(f"{purpose.value} accounts are "
                         f"{'the platform' if purpose in PLATFORM_PURPOSES else 'per organization'}")
    owner = organization_id or 0
    account = session.scalar(select(LedgerAccount).where(
        LedgerAccount.purpose == purpose.value, LedgerAccount.organization_id == owner,
        LedgerAccount.currency == currency))
    if account is None:
        # Two first postings racing to create the same account: the unique constraint makes the
        # loser's transaction fail as a whole, and it is retried; no half-posting survives.
        account = LedgerAccount(purpose=purpose.value, organization_id=owner, currency=currency)
        session.add(account)
        session.flush()  # postings refer to the account by id
    return account


@dataclass(frozen=True)
class Line:
    """One side of a posting: a signed amount on an account (debit positive)."""

    account: LedgerAccount
    amount: Money

    @classmethod
    def debit(cls, account: LedgerAccount, amount: Money) -> "Line":
        return cls(account, amount)

    @classmethod
    def credit(cls, account: LedgerAccount, amount: Money) -> "Line":
        return cls(account, -amount)


def _fingerprint(kind: str, lines: Sequence[Line]) -> str:
    canonical = json.dumps(sorted([line.account.id, line.amount.minor, line.amount.currency]
                                  for line in lines), separators=(",", ":"))
    return hashlib.sha256(f"{kind}:{canonical}".encode()).hexdigest()


# Posters hold this lock shared and a checkpoint holds it exclusively, so a checkpoint sees every
# transaction below the newest id it covers already committed (none commits behind it later).
LEDGER_LOCK_ID = 7_201_002


def hold_posting_lock(session: Session, *, exclusive: bool = False) -> None:
    """Until the transaction ends: shared by posters, exclusive for a checkpoint (PostgreSQL;
    SQLite has one writer at a time anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {function}(:id)"), {"id": LEDGER_LOCK_ID})


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def seal_of(*, kind: str, idempotency_key: str, reference_type: str | None,
            reference_id: str | None, memo: Mapping[str, Any], occurred_at: dt.datetime,
            entries: Iterable[tuple[int, str, int, str, int, str]]) -> str:
    """The seal of a transaction. ``entries``: (account id, account purpose, account owner,
    account currency, amount in minor units, entry currency), in any order."""
    return hashlib.sha256(canonical_json({
        "kind": kind, "idempotency_key": idempotency_key,
        "reference": [reference_type, reference_id], "memo": memo,
        "occurred_at": occurred_at.astimezone(dt.timezone.utc).isoformat(),
        "entries": sorted(list(entry) for entry in entries),
    }).encode("utf-8")).hexdigest()


def seal_of_lines(kind: str, lines: Sequence[Line], *, idempotency_key: str,
                  reference: tuple[str, object] | None, memo: Mapping[str, Any],
                  occurred_at: dt.datetime) -> str:
    """The seal ``post`` writes for these lines."""
    return seal_of(
        kind=kind, idempotency_key=idempotency_key,
        reference_type=reference[0] if reference else None,
        reference_id=str(reference[1]) if reference else None, memo=memo,
        occurred_at=occurred_at,
        entries=[(line.account.id, line.account.purpose, line.account.organization_id,
                  line.account.currency, line.amount.minor, line.amount.currency)
                 for line in lines])


def post(session: Session, kind: str, lines: Iterable[Line], *, idempotency_key: str,
         reference: tuple[str, object] | None = None,
         memo: Mapping[str, Any] | None = None) -> LedgerTransaction:
    """Record one balanced transaction.

    Each account's currency must match its line; zero lines are dropped; what remains must sum
    to zero per currency. A replay with the same key and entries returns the first posting.
    """
    lines = [line for line in lines if not line.amount.is_zero()]
    if not lines:
        raise InvalidInput("A transaction needs at least one non-zero entry.", field="lines")
    totals: dict[str, int] = defaultdict(int)
    for line in lines:
        if line.account.currency != line.amount.currency:
            raise InvalidInput(f"{line.account.label} takes {line.account.currency}, not "
                               f"{line.amount.currency}.", field="lines")
        totals[line.amount.currency] += line.amount.minor
    unbalanced = {currency: total for currency, total in totals.items() if total}
    if unbalanced:
        raise InvalidInput(f"Entries do not balance: {unbalanced} (minor units).", field="lines")

    fingerprint = _fingerprint(kind, lines)
    existing = session.scalar(select(LedgerTransaction).where(
        LedgerTransaction.idempotency_key == idempotency_key))
    if existing is not None:
        if existing.fingerprint != fingerprint:
            raise Conflict("This idempotency key was used for a different posting.",
                           field="idempotency_key")
        return existing
    hold_posting_lock(session)
    memo = dict(memo or {})
    occurred_at = utcnow()
    transaction = LedgerTransaction(
        kind=kind, idempotency_key=idempotency_key, fingerprint=fingerprint,
        reference_type=reference[0] if reference else None,
        reference_id=str(reference[1]) if reference else None, memo=memo,
        occurred_at=occurred_at,
        seal=seal_of_lines(kind, lines, idempotency_key=idempotency_key, reference=reference,
                           memo=memo, occurred_at=occurred_at),
        entries=[LedgerEntry(account_id=line.account.id, amount_minor=line.amount.minor,
                             currency=line.amount.currency) for line in lines])
    session.add(transaction)
    session.flush()  # the caller's next posting may reuse the accounts; ids must exist
    return transaction


def balance(session: Session, account: LedgerAccount) -> Money:
    """The account's balance, debit positive."""
    total = session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
                           .where(LedgerEntry.account_id == account.id))
    return Money.from_minor(int(total), account.currency)


def trial_balance(session: Session) -> dict[str, int]:
    """The sum of all entries per currency: zero for every currency in a sound ledger."""
    rows = session.execute(select(LedgerEntry.currency, func.sum(LedgerEntry.amount_minor))
                           .group_by(LedgerEntry.currency)).all()
    return {currency: int(total) for currency, total in rows}


def unbalanced_transactions(session: Session) -> list[int]:
    """Ids of transactions whose entries do not sum to zero in some currency (none, ever)."""
    rows = session.execute(
        select(LedgerEntry.transaction_id).group_by(LedgerEntry.transaction_id,
                                                    LedgerEntry.currency)
        .having(func.sum(LedgerEntry.amount_minor) != 0)).all()
    return sorted({row[0] for row in rows})
