"""Checking the ledger as it stands in the database (``flask billing verify-ledger``).

The application never writes an unbalanced or altered ledger (``billing.settlement.ledger.post`` refuses
it and a session refuses to change an entry), so what this finds was written behind it, with
SQL on the tables. In order, each naming what broke:

1. every entry is in its account's currency;
2. every transaction's entries sum to zero per currency (a lone posting added or removed);
3. the trial balance sums to zero per currency;
4. every transaction still matches its seal (an amount, an account, a reference, a memo or a
   time changed after posting — a balanced move between platform revenue and tax included);
5. every payment's and refund's entries are the split its payment or refund row records (the
   same move, re-sealed by whoever made it, still disagrees with the order's allocation);
6. every token wallet's stored balance is the sum of its entries, and its last entry's
   ``balance_after``.

What a re-sealed transaction with no other record (an adjustment, a payout) hides from these
checks, the signed checkpoints show: see ``billing.settlement.checkpoints``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.settlement.checkpoints import Finding
from billing.settlement.ledger import (
    PLATFORM_PURPOSES, LedgerAccount, LedgerEntry, LedgerTransaction, Purpose, seal_of,
)
from billing.models import Payment, Refund, TokenWallet, WalletEntry
from billing.settlement.split import PLATFORM, PREPAID, RECEIVABLE, TAX
from pricing.money import Money

BATCH = 2000


def _label(transaction: Any) -> str:
    return f"ledger transaction {transaction.id} ({transaction.kind} {transaction.idempotency_key})"


def _money(minor: int, currency: str) -> str:
    return f"{Money.from_minor(minor, currency).amount} {currency}"


def _part_account(key: str) -> tuple[str, int]:
    """The (purpose, owner) a part of a split is posted to (``billing.settlement.split``'s rule)."""
    if key == TAX:
        return Purpose.TAX_PAYABLE.value, 0
    if key == PLATFORM:
        return Purpose.PLATFORM_REVENUE.value, 0
    owner = int(key.rsplit(":", 1)[1])
    if key.startswith(f"{PREPAID}:"):
        return Purpose.BUYER_PREPAID.value, owner
    if key.startswith(f"{RECEIVABLE}:"):
        return Purpose.BUYER_RECEIVABLE.value, owner
    return Purpose.PARTICIPANT_PAYABLE.value, owner


def _transactions(session: Session) -> Iterator[tuple[Any, list[Any]]]:
    """Every transaction with its entries (and their accounts), in id order, in batches."""
    after = 0
    while True:
        batch = session.execute(
            select(LedgerTransaction.id, LedgerTransaction.kind,
                   LedgerTransaction.idempotency_key, LedgerTransaction.reference_type,
                   LedgerTransaction.reference_id, LedgerTransaction.memo,
                   LedgerTransaction.occurred_at, LedgerTransaction.seal)
            .where(LedgerTransaction.id > after).order_by(LedgerTransaction.id)
            .limit(BATCH)).all()
        if not batch:
            return
        entries: dict[int, list[Any]] = defaultdict(list)
        for entry in session.execute(
                select(LedgerEntry.transaction_id, LedgerEntry.account_id,
                       LedgerEntry.amount_minor, LedgerEntry.currency, LedgerAccount.purpose,
                       LedgerAccount.organization_id,
                       LedgerAccount.currency.label("account_currency"))
                .outerjoin(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
                .where(LedgerEntry.transaction_id > after,
                       LedgerEntry.transaction_id <= batch[-1].id)
                .order_by(LedgerEntry.id)):
            entries[entry.transaction_id].append(entry)
        for transaction in batch:
            yield transaction, entries.get(transaction.id, [])
        after = batch[-1].id


def verify_ledger(session: Session) -> list[Finding]:
    """Everything wrong with the ledger, each finding naming the transaction, account or
    wallet that broke; empty for a sound ledger."""
    findings: list[Finding] = []
    unbalanced: list[Finding] = []
    altered: list[Finding] = []
    sources: list[Finding] = []
    currencies: list[Finding] = []
    payments: dict[str, dict[str, str]] = {}
    refunds: dict[str, dict[str, str]] = {}
    to_check: list[tuple[Any, list[Any]]] = []
    for transaction, entries in _transactions(session):
        label = _label(transaction)
        totals: dict[str, int] = defaultdict(int)
        for entry in entries:
            totals[entry.currency] += entry.amount_minor
            if entry.purpose is None:
                currencies.append(Finding(label, f"an entry names account {entry.account_id}, "
                                                 "which does not exist"))
            elif entry.account_currency != entry.currency:
                currencies.append(Finding(label, f"an entry of {entry.currency} is on a "
                                                 f"{entry.account_currency} account "
                                                 f"({entry.purpose})"))
        if not entries:
            unbalanced.append(Finding(label, "it has no entries (they were deleted)"))
        for currency, total in sorted(totals.items()):
            if total:
                unbalanced.append(Finding(label, f"does not balance in {currency}: its entries "
                                                 f"sum to {_money(total, currency)}"))
        expected = seal_of(
            kind=transaction.kind, idempotency_key=transaction.idempotency_key,
            reference_type=transaction.reference_type, reference_id=transaction.reference_id,
            memo=transaction.memo or {}, occurred_at=transaction.occurred_at,
            entries=[(e.account_id, e.purpose, e.organization_id, e.account_currency,
                      e.amount_minor, e.currency) for e in entries])
        if expected != transaction.seal:
            altered.append(Finding(label, "it no longer matches its seal: an amount, account, "
                                          "reference, memo or time was changed after posting"))
        if transaction.reference_type in ("payment", "refund") and \
                transaction.kind in ("payment", "payment_unapplied", "refund"):
            to_check.append((transaction, entries))
            (payments if transaction.reference_type == "payment" else refunds)[
                transaction.reference_id] = {}
    _load_parts(session, payments, refunds)
    for transaction, entries in to_check:
        problem = _against_source(transaction, entries, payments, refunds)
        if problem is not None:
            sources.append(Finding(_label(transaction), problem))
    findings += currencies + unbalanced
    for currency, total in sorted(_trial_balance(session).items()):
        if total:
            findings.append(Finding(f"trial balance in {currency}",
                                    f"sums to {_money(total, currency)}, not zero"))
    findings += altered + sources + _wallets(session)
    return findings


def _trial_balance(session: Session) -> dict[str, int]:
    rows = session.execute(select(LedgerEntry.currency, func.sum(LedgerEntry.amount_minor))
                           .group_by(LedgerEntry.currency)).all()
    return {currency: int(total) for currency, total in rows}


def _load_parts(session: Session, payments: dict[str, dict], refunds: dict[str, dict]) -> None:
    for model, wanted, column in ((Payment, payments, Payment.split),
                                  (Refund, refunds, Refund.parts)):
        ids = [int(i) for i in wanted if str(i).isdigit()]
        for start in range(0, len(ids), 1000):
            for row_id, parts, currency in session.execute(
                    select(model.id, column, model.currency)
                    .where(model.id.in_(ids[start:start + 1000]))):
                wanted[str(row_id)] = {"parts": parts or {}, "currency": currency}


def _against_source(transaction: Any, entries: list[Any], payments: dict[str, dict],
                    refunds: dict[str, dict]) -> str | None:
    """Why the transaction's entries are not the split its payment or refund records, or None."""
    is_refund = transaction.reference_type == "refund"
    source = (refunds if is_refund else payments).get(transaction.reference_id) or {}
    name = f"{transaction.reference_type} {transaction.reference_id}"
    if "parts" not in source:
        return f"its {name} does not exist"
    currency = source["currency"]
    expected: dict[tuple[str, int], int] = defaultdict(int)
    for key, amount in source["parts"].items():
        expected[_part_account(key)] += Money(amount, currency).minor
    # A payment credits each part; a refund debits each part back.
    sign = 1 if is_refund else -1
    actual: dict[tuple[str, int], int] = defaultdict(int)
    for entry in entries:
        if entry.purpose is not None and sign * entry.amount_minor > 0 and \
                entry.purpose != Purpose.PLATFORM_CLEARING.value:
            actual[(entry.purpose, entry.organization_id)] += sign * entry.amount_minor
    wrong = []
    for account in sorted(set(expected) | set(actual)):
        if expected.get(account, 0) != actual.get(account, 0):
            purpose, owner = account
            whose = "platform" if purpose in {p.value for p in PLATFORM_PURPOSES} and not owner \
                else f"org {owner}"
            wrong.append(f"{purpose} ({whose}) is {'debited' if is_refund else 'credited'} "
                         f"{_money(actual.get(account, 0), currency)}, but {name} records "
                         f"{_money(expected.get(account, 0), currency)} for it")
    return "; ".join(wrong) or None


def _wallets(session: Session) -> list[Finding]:
    sums = dict(session.execute(select(WalletEntry.wallet_id, func.sum(WalletEntry.delta_tokens))
                                .group_by(WalletEntry.wallet_id)).all())
    last_ids = select(func.max(WalletEntry.id)).group_by(WalletEntry.wallet_id)
    after = dict(session.execute(select(WalletEntry.wallet_id, WalletEntry.balance_after)
                                 .where(WalletEntry.id.in_(last_ids))).all())
    findings = []
    for wallet_id, stored in session.execute(select(TokenWallet.id, TokenWallet.balance_tokens)
                                             .order_by(TokenWallet.id)):
        total = int(sums.get(wallet_id) or 0)
        if stored != total:
            findings.append(Finding(f"token wallet {wallet_id}",
                                    f"its stored balance is {stored} tokens, but its entries "
                                    f"sum to {total}"))
        elif wallet_id in after and after[wallet_id] != stored:
            findings.append(Finding(f"token wallet {wallet_id}",
                                    f"its stored balance is {stored} tokens, but its last "
                                    f"entry left {after[wallet_id]}"))
    return findings
