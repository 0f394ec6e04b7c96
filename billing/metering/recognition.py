"""Usage revenue in the ledger: each day's charged usage, per dataset, split to its supply chain.

Metered calls and royalty reports are charged as they happen (``billing.metering.charge``,
``billing.metering.usage``) but written to the ledger once a day, aggregated per organization, dataset,
supply-chain revision, currency and what paid — so settlement statements can trace usage per
dataset per day, and the ledger stays small however many calls there are.

=============  =======================================  ===================================
paid by        debit (the buyer's side)                 credit
=============  =======================================  ===================================
postpaid       buyer_receivable: invoiced monthly        platform fee + each participant's
wallet         buyer_prepaid: a platform-wide token      share of the day's amount, split
               pack's credit, used up (valued at the    like a payment (``split_payment``)
               platform pack price, once per group)
=============  =======================================  ===================================

Tokens from a subscription's allowance or a dataset's own token pack carry no amount here: their
money was split when the subscription or pack was paid. When the monthly usage invoice is paid, the
money settles the buyer's receivable (``billing.payments.settle.order_split``), so nothing is
shared twice. Days are business days (``BUSINESS_TIMEZONE``), and a day is recognized by the events
*recorded* on it: late events are adjustments of the day they arrive, never of a closed one. Each
(group, day) posts under its own idempotency key, so running a day twice changes nothing; what a
rerun finds beyond what was posted is posted on top (keyed by the new total).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.context import BillingSettings
from billing.settlement.ledger import LedgerEntry, LedgerTransaction, Line, Purpose, get_account, post
from billing.entitlements import wallet_scope
from billing.models import TokenWallet, UsageEvent, WalletEntry
from billing.runs import JobContext
from billing.settlement.split import PLATFORM, part_account, split_payment
from market.accounts.models import ApiKey, Organization
from market.catalog.models import Dataset, DatasetVersion, SupplyChainRevision
from market.core.db import Database, business_calendar
from pricing.money import Money, UnitPrice

SOURCES = {"postpaid": Purpose.BUYER_RECEIVABLE, "wallet": Purpose.BUYER_PREPAID}


def _bounds(session: Session, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The business day's first instant and the next day's, in UTC."""
    return business_calendar(session).day_bounds(day)


def _platform_wallet_rows(session: Session, start: dt.datetime, end: dt.datetime,
                          price: Money | None) -> list[tuple]:
    """The day's tokens taken from platform-wide wallets, per group, valued at the platform
    pack's price (rounded once per group): their money is the buyer's prepaid credit."""
    if price is None:
        return []
    unit = UnitPrice.of(price)
    rows = session.execute(
        select(UsageEvent.organization_id, UsageEvent.dataset_id,
               UsageEvent.supply_chain_revision_id, UsageEvent.kind,
               func.sum(UsageEvent.tokens), func.count())
        .join(WalletEntry, WalletEntry.reference == UsageEvent.request_id)
        .join(TokenWallet, TokenWallet.id == WalletEntry.wallet_id)
        .where(UsageEvent.recorded_at >= start, UsageEvent.recorded_at < end,
               UsageEvent.paid_by == "wallet", TokenWallet.scope == wallet_scope(None))
        .group_by(UsageEvent.organization_id, UsageEvent.dataset_id,
                  UsageEvent.supply_chain_revision_id, UsageEvent.kind)).all()
    return [(org, dataset_id, revision_id, price.currency, "wallet", kind,
             unit.total(int(tokens), per=1_000_000).minor, tokens, calls)
            for org, dataset_id, revision_id, kind, tokens, calls in rows]


class DanglingReferences(RuntimeError):
    """Usage events that point at rows that do not exist: nothing of their day is posted."""


def dangling_references(session: Session, start: dt.datetime, end: dt.datetime
                        ) -> dict[str, int]:
    """How many of the events recorded in [start, end) point at a missing organization, API
    key, dataset, version or supply-chain revision, per column (those with none left out).

    ``usage_events`` carries no foreign keys on these (see ``UsageEvent``); this is their check,
    made before a day's usage reaches the ledger.
    """
    parents = {"organization_id": Organization, "api_key_id": ApiKey, "dataset_id": Dataset,
               "version_id": DatasetVersion, "supply_chain_revision_id": SupplyChainRevision}
    found = {}
    for column, parent in parents.items():
        reference = getattr(UsageEvent, column)
        count = session.scalar(
            select(func.count()).select_from(UsageEvent)
            .outerjoin(parent, parent.id == reference)
            .where(UsageEvent.recorded_at >= start, UsageEvent.recorded_at < end,
                   reference.is_not(None), parent.id.is_(None)))
        if count:
            found[column] = count
    return found


def recognize_day(session: Session, day: dt.date, settings: BillingSettings) -> dict[str, int]:
    """Post one day's usage revenue (idempotent per group and day); refuses, posting nothing,
    a day with events that point at missing rows (``dangling_references``)."""
    start, end = _bounds(session, day)
    dangling = dangling_references(session, start, end)
    if dangling:
        raise DanglingReferences(f"usage events of {day} point at missing rows: {dangling}")
    rows = session.execute(
        select(UsageEvent.organization_id, UsageEvent.dataset_id,
               UsageEvent.supply_chain_revision_id, UsageEvent.currency, UsageEvent.paid_by,
               UsageEvent.kind, func.sum(UsageEvent.amount_minor), func.sum(UsageEvent.tokens),
               func.count())
        .where(UsageEvent.recorded_at >= start, UsageEvent.recorded_at < end,
               UsageEvent.paid_by == "postpaid", UsageEvent.amount_minor > 0)
        .group_by(UsageEvent.organization_id, UsageEvent.dataset_id,
                  UsageEvent.supply_chain_revision_id, UsageEvent.currency,
                  UsageEvent.paid_by, UsageEvent.kind)
        .order_by(UsageEvent.organization_id, UsageEvent.dataset_id)).all()
    rows = list(rows) + _platform_wallet_rows(session, start, end,
                                              settings.token_pack_price_per_million)
    counts: dict[str, int] = defaultdict(int)
    accounts: dict[tuple, object] = {}  # the day's accounts and chains, looked up once each
    shares_of: dict[int, list] = {}

    def account(key: str, currency: str):
        if (key, currency) not in accounts:
            accounts[(key, currency)] = part_account(session, key, currency)
        return accounts[(key, currency)]

    for org, dataset_id, revision_id, currency, paid_by, kind, amount, tokens, calls in rows:
        if not amount:
            continue
        key = (f"usage:{day.isoformat()}:{org}:{dataset_id}:{revision_id}:{currency}:"
               f"{paid_by}:{kind}")
        posted = _posted_gross(session, key)
        if posted >= int(amount):
            counts["already"] += 1
            continue
        # What a rerun finds beyond what was posted (events that committed after a run) is
        # posted as its own transaction, keyed by the day's new total: never a Conflict.
        gross = Money.from_minor(int(amount) - posted, currency)
        if revision_id and revision_id not in shares_of:
            shares_of[revision_id] = session.get(SupplyChainRevision, revision_id).shares_bps()
        if revision_id:
            parts = split_payment(gross, Money.zero(currency), shares_of[revision_id],
                                  settings.platform_fee_bps)
        else:  # no supply chain declared: all of it is the platform's
            parts = {PLATFORM: gross}
        source_key = (SOURCES[paid_by], org)
        if (source_key, currency) not in accounts:
            accounts[(source_key, currency)] = get_account(session, SOURCES[paid_by], currency,
                                                           org)
        lines = [Line.debit(accounts[(source_key, currency)], gross)]
        lines += [Line.credit(account(key, currency), part)
                  for key, part in parts.items() if not part.is_zero()]
        post(session, "usage", lines,
             idempotency_key=key if not posted else f"{key}:upto:{int(amount)}",
             reference=("usage", f"{org}:{dataset_id}:{day.isoformat()}"),
             memo={"organization_id": org, "dataset_id": dataset_id, "day": day.isoformat(),
                   "kind": kind, "paid_by": paid_by, "tokens": int(tokens),
                   "calls": int(calls), "gross": str(gross.amount),
                   "split": {key: str(part.amount) for key, part in parts.items()}})
        counts["groups"] += 1
        counts["tokens"] += int(tokens)
    return dict(counts)


def _posted_gross(session: Session, key: str) -> int:
    """What the day's postings of one group (``key`` and its later top-ups) debited already."""
    return int(session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where((LedgerTransaction.idempotency_key == key)
               | LedgerTransaction.idempotency_key.startswith(f"{key}:upto:", autoescape=True),
               LedgerEntry.amount_minor > 0)))


def run_recognition(ctx: JobContext) -> dict:
    """Job ``recognize-usage``: post the run's day of usage revenue to the ledger."""
    day = dt.date.fromisoformat(ctx.period)
    with ctx.db.session() as session, session.begin():
        result = recognize_day(session, day, BillingSettings.from_settings(ctx.settings))
    ctx.progress(f"usage of {day}: {result.get('groups', 0)} groups posted")
    return result


def recognize_range(db: Database, first: dt.date, last: dt.date,
                    settings: BillingSettings) -> int:
    """Recognize every day from ``first`` to ``last`` (a catch-up after downtime)."""
    groups = 0
    day = first
    while day <= last:
        with db.session() as session, session.begin():
            groups += recognize_day(session, day, settings).get("groups", 0)
        day += dt.timedelta(days=1)
    return groups

