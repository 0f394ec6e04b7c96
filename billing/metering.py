"""Charging metered data calls in tokens, exactly and never beyond a cap.

A data call is charged the tokens of exactly what it serves: each returned record's canonical
JSON, counted with the configured encoding (the counts stored at import are of those same
bytes; a version counted with another encoding is recounted). What pays, in this order:

1. the subscription's included tokens for the current period (nothing more to pay);
2. a prepaid token wallet: the dataset's own, then the platform-wide one;
3. postpaid pay-as-you-go on the organization's credit line, priced by the dataset's metered
   rate card and invoiced monthly.

A call is charged whole to the first source that can cover it; with none, it is refused with
402 naming what is missing. Before any source, the key's monthly token cap is checked (on
PostgreSQL the commonest call — a wallet pays — debits the wallet, takes the cap and records
the event in one statement; a cap it would pass refuses the call, and the refusal rolls the
debit back).

Every limit is held by a conditional UPDATE in the same transaction as the usage event — the
row's condition is re-checked under its row lock, so however many calls race, a wallet never goes
below zero and a cap is never passed by one token. A refused call writes nothing. Budget caps
(the budgets' hook) are asked before the event is written.

Graduated prices depend on the month's total, so a postpaid call is charged the rating of the
month's total after it minus the rating before it (``UsageCounter``): the month's charges add up
exactly to the rating of its total.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Update, bindparam, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.accounts.models import ApiKey
from market.catalog.models import (
    Dataset, DatasetVersion, ListingStatus, Offer, SupplyChainRevision,
)
from market.db import business_calendar, utcnow
from market.errors import Forbidden, InvalidInput, MarketError, NotFound
from billing.entitlements import active_entitlement, wallet_scope
from billing.models import (
    CreditLine, KeyUsageMonth, Subscription, TokenWallet, UsageCounter, UsageEvent, WalletEntry,
)
from pricing.money import Money
from pricing.offers import MeteredRateCard, RoyaltyRateCard, offer_from_dict
from pricing.rating import Usage, rate


class PaymentRequired(MarketError):
    status = 402
    title = "Payment required"
    default_code = "payment_required"


# Hooks the budgets add: called with (session, organization_id, dataset_id, amount) before a
# postpaid charge is written; raise PaymentRequired naming the exhausted budget line.
BUDGET_GUARDS: list[Callable[[Session, int, int, Money], None]] = []


@dataclass(frozen=True)
class Charge:
    tokens: int
    amount: Money
    paid_by: str  # subscription | wallet | postpaid | free
    remaining: int | None  # tokens left in what paid (None: a credit line, counted in money)
    event_id: int
    replayed: bool = False


def relax_commit_durability(session: Session) -> None:
    """Let this transaction's commit return before PostgreSQL has flushed it to disk.

    A metered call's charge is small and frequent; waiting for the disk on each would be most
    of its cost. The transaction stays atomic — the debit, the cap and the usage event commit or
    vanish together — and a crash can lose only the last fraction of a second of calls, which
    then go uncharged (in the buyer's favour), never half-charged. Orders, payments and refunds
    keep full durability: only metering asks for this.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def period_of(session: Session, moment: dt.datetime) -> str:
    """The month a charge at ``moment`` belongs to: its business month (``BUSINESS_TIMEZONE``),
    which its invoice, its graduated rating and its key's monthly cap all share."""
    return business_calendar(session).month_of(moment)


# Access -----------------------------------------------------------------------------------------

def callable_version(session: Session, organization_id: int, dataset_id: int,
                     number: int) -> tuple[Dataset, DatasetVersion, bool]:
    """The version a metered call may read — of a listed dataset (or the caller's own) that the
    organization is entitled to call (403 says why not) — and whether a subscription may pay."""
    dataset = session.get(Dataset, dataset_id)
    listed = dataset is not None and dataset.listing is not None and \
        dataset.listing.status == ListingStatus.APPROVED.value
    own = dataset is not None and dataset.organization_id == organization_id
    if not (listed or own):
        raise NotFound("No such dataset.", field="dataset")
    version = session.scalar(select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset_id, DatasetVersion.number == number))
    if version is None:
        raise NotFound("No such version.", field="version")
    entitlement = active_entitlement(session, organization_id, dataset_id, kind="api",
                                     version_id=version.id)
    subscribed = entitlement is not None and entitlement.subscription_id is not None
    if own:
        return dataset, version, subscribed
    if dataset.listing.version_id != version.id and entitlement is None:
        raise Forbidden("Only the listed version is served to buyers.", field="version")
    if entitlement is not None or _metered_card(dataset) is not None:
        return dataset, version, subscribed  # entitled, or pay as you go by the rate card
    raise Forbidden("The organization is not entitled to this dataset's API: subscribe, buy a "
                    "package that includes API tokens, or ask for a metered offer.",
                    field="dataset")


def _metered_card(dataset: Dataset, kind: str = "metered"
                  ) -> tuple[Offer, MeteredRateCard | RoyaltyRateCard] | None:
    offer = next((o for o in dataset.active_offers if o.kind == kind), None)
    return (offer, offer_from_dict(offer.terms)) if offer is not None else None


# Charging ---------------------------------------------------------------------------------------

def find_replay(session: Session, request_id: str, request_hash: str) -> UsageEvent | None:
    """The event a retried call already paid for (same Idempotency-Key), or None."""
    event = session.scalar(select(UsageEvent).where(UsageEvent.request_id == request_id))
    if event is not None and event.request_hash not in (None, request_hash):
        raise InvalidInput("This Idempotency-Key was already used with a different request.",
                           field="Idempotency-Key")
    return event


def _replayed(session: Session, event: UsageEvent) -> Charge:
    return Charge(event.tokens, Money.from_minor(event.amount_minor, event.currency),
                  event.paid_by, None, event.id, replayed=True)


# The statements every metered call runs are built once, here, with bound parameters, and
# against the Core tables rather than the ORM classes: an UPDATE or INSERT of an ORM class also
# passes through the session's bulk-DML layer (which would keep objects in the session in step;
# none are held here). Building them per call and that layer cost as much Python as the rest
# of the charge.
_KEY_MONTHS = KeyUsageMonth.__table__
_SUBSCRIPTIONS = Subscription.__table__
_WALLETS = TokenWallet.__table__
_WALLET_ENTRIES = WalletEntry.__table__
_EVENTS = UsageEvent.__table__

_TAKE_KEY_MONTH = (
    update(_KEY_MONTHS)
    .where(_KEY_MONTHS.c.api_key_id == bindparam("key_id"),
           _KEY_MONTHS.c.period == bindparam("month"),
           _KEY_MONTHS.c.tokens + bindparam("taken") <= bindparam("cap"))
    .values(tokens=_KEY_MONTHS.c.tokens + bindparam("taken")))


def _wallet_debit(*which) -> Update:
    """Debit ``:taken`` tokens from the wallet ``which`` selects, if it still holds them; the
    wallet's id and balance come back."""
    wallet = _WALLETS.c
    return (update(_WALLETS)
            .where(*which, wallet.balance_tokens >= bindparam("taken"))
            .values(balance_tokens=wallet.balance_tokens - bindparam("taken"),
                    updated_at=bindparam("now"))
            .returning(wallet.id, wallet.balance_tokens))


# The dataset's wallet if it holds enough, else the platform's.
_DEBIT_FIRST_WALLET = _wallet_debit(_WALLETS.c.id == (
    select(_WALLETS.c.id)
    .where(_WALLETS.c.organization_id == bindparam("org"),
           or_(_WALLETS.c.scope == bindparam("dataset_scope"),
               _WALLETS.c.scope == bindparam("platform_scope")),
           _WALLETS.c.balance_tokens >= bindparam("taken"))
    .order_by((_WALLETS.c.scope == bindparam("platform_scope")).asc())
    .limit(1).scalar_subquery()))
_DEBIT_WALLET = _wallet_debit(_WALLETS.c.organization_id == bindparam("org"),
                              _WALLETS.c.scope == bindparam("only_scope"))


def _take_key_cap(session: Session, key: ApiKey, tokens: int, period: str) -> None:
    if key.monthly_token_cap is None:
        return
    take = {"key_id": key.id, "month": period, "taken": tokens,
            "cap": key.monthly_token_cap}
    if session.execute(_TAKE_KEY_MONTH, take).rowcount:
        return
    # The month's first call (no row yet), or the cap is reached.
    if session.scalar(select(KeyUsageMonth.id).where(KeyUsageMonth.api_key_id == key.id,
                                                     KeyUsageMonth.period == period)) is None:
        try:
            with session.begin_nested():
                session.add(KeyUsageMonth(api_key_id=key.id, period=period, tokens=0))
        except IntegrityError:
            pass  # another call created the month's row first: use it
        if session.execute(_TAKE_KEY_MONTH, take).rowcount:
            return
    raise _cap_refusal(key, tokens)


def _cap_refusal(key: ApiKey, tokens: int) -> PaymentRequired:
    return PaymentRequired(
        f"This API key's monthly cap of {key.monthly_token_cap:,} tokens would be passed "
        f"by this call ({tokens:,} tokens).", field="monthly_token_cap")


def _live_subscription(organization_id: int, dataset_id: int, today: dt.date,
                       columns=Subscription):
    return (columns.organization_id == organization_id,
            columns.dataset_id == dataset_id, columns.status == "active",
            columns.current_period_start <= today, columns.current_period_end > today)


def _take_subscription(session: Session, organization_id: int, dataset_id: int, tokens: int,
                       today: dt.date) -> int | None:
    """Take the tokens from the live subscription's allowance; the tokens left, or None."""
    sub = _SUBSCRIPTIONS.c
    row = session.execute(
        update(_SUBSCRIPTIONS)
        .where(*_live_subscription(organization_id, dataset_id, today, sub),
               sub.tokens_used + tokens <= sub.included_tokens + sub.rollover_tokens)
        .values(tokens_used=sub.tokens_used + tokens)
        .returning(sub.included_tokens + sub.rollover_tokens - sub.tokens_used)).first()
    return None if row is None else int(row[0])


def _take_wallet(session: Session, organization_id: int, dataset_id: int, tokens: int,
                 request_id: str) -> int | None:
    """Take the tokens from the dataset's wallet, else the platform's; the balance left.

    One statement picks the wallet and debits it; the balance is checked again in the
    UPDATE's own condition, which PostgreSQL re-evaluates under the row lock, so racing calls
    never overdraw. If that wallet was drained meanwhile, each wallet is tried in turn."""
    scopes = (wallet_scope(dataset_id), wallet_scope(None))
    debit = {"org": organization_id, "taken": tokens, "now": utcnow()}
    row = session.execute(_DEBIT_FIRST_WALLET, debit | {
        "dataset_scope": scopes[0], "platform_scope": scopes[1]}).first()
    if row is not None:
        _log_debit(session, row, tokens, request_id, dataset_id)
        return int(row.balance_tokens)
    for scope in scopes:
        row = session.execute(_DEBIT_WALLET, debit | {"only_scope": scope}).first()
        if row is not None:
            _log_debit(session, row, tokens, request_id, dataset_id)
            return int(row.balance_tokens)
    return None


def _log_debit(session: Session, row, tokens: int, request_id: str, dataset_id: int) -> None:
    session.execute(_LOG_DEBIT, {
        "wallet_id": row.id, "kind": "debit", "delta_tokens": -tokens,
        "balance_after": row.balance_tokens, "reference": request_id,
        "note": f"dataset {dataset_id}", "created_at": utcnow()})


_LOG_DEBIT = insert(_WALLET_ENTRIES)


def card_rating(card) -> Callable[[int], int]:
    """A month's total tokens -> its price in minor units, on a metered or royalty card."""
    return lambda total: rate(Usage(tokens=total), card, include_fee=False).total.minor \
        if total else 0


def overage_rating(plan) -> Callable[[int], int]:
    """A month's overage tokens -> their price at the plan's overage rate, rounded once."""
    return lambda total: plan.overage_per_million.total(total, per=1_000_000).minor


def rated_increment(session: Session, organization_id: int, dataset_id: int, kind: str,
                    period: str, tokens: int, currency: str,
                    rating: Callable[[int], int]) -> tuple[Money, UsageCounter]:
    """What ``tokens`` more cost on the month's rating (see the module notes); the counter row
    is locked until the transaction ends, so racing calls are rated one after another."""
    query = select(UsageCounter).where(
        UsageCounter.organization_id == organization_id, UsageCounter.dataset_id == dataset_id,
        UsageCounter.kind == kind, UsageCounter.period == period)
    counter = session.scalar(query.with_for_update())
    if counter is None:
        try:
            with session.begin_nested():
                session.add(UsageCounter(organization_id=organization_id, dataset_id=dataset_id,
                                         kind=kind, period=period, currency=currency,
                                         tokens=0, amount_minor=0))
        except IntegrityError:
            pass  # created by a racing call
        counter = session.scalar(query.with_for_update())
    before = counter.amount_minor
    # A volume-tier card can price a larger month lower than a smaller one; a call is never
    # charged less than nothing, so the month's charges then exceed its rating by the discount.
    after = max(rating(counter.tokens + tokens), before)
    counter.tokens += tokens
    counter.amount_minor = after
    return Money.from_minor(after - before, currency), counter


def _take_credit(session: Session, organization_id: int, amount: Money) -> int | None:
    """Charge ``amount`` to the organization's live credit line in its currency; returns the
    line's id, None when it has none, and raises PaymentRequired when the limit would be
    passed. One conditional UPDATE: the common case is a single round trip."""
    live = (CreditLine.organization_id == organization_id,
            CreditLine.currency == amount.currency, CreditLine.suspended_at.is_(None))
    line_id = session.scalar(
        update(CreditLine)
        .where(*live, CreditLine.used_minor + amount.minor <= CreditLine.limit_minor)
        .values(used_minor=CreditLine.used_minor + amount.minor)
        .returning(CreditLine.id)
        .execution_options(synchronize_session=False))
    if line_id is not None:
        return line_id
    if session.scalar(select(CreditLine.id).where(*live)) is None:
        return None
    raise PaymentRequired(f"The credit line's limit would be passed by this call "
                          f"({amount}); pay the open usage invoice or ask for a higher "
                          "limit.", field="credit_line")


def charge_call(session: Session, *, key: ApiKey, dataset: Dataset, version: DatasetVersion,
                tokens: int, request_id: str, request_hash: str,
                now: dt.datetime | None = None, subscribed: bool = True) -> Charge:
    """Charge one data call (see the module notes for the order and the guarantees).

    A retry under the same Idempotency-Key is found by the caller (``find_replay``) before it
    serves anything; the request id's unique constraint stops a racing duplicate.
    ``subscribed``: whether a subscription entitles the call (False skips asking it to pay).
    """
    now = now or utcnow()
    period = period_of(session, now)
    organization_id = key.organization_id
    currency = key.organization.default_currency
    if tokens and not subscribed and session.get_bind().dialect.name == "postgresql":
        # The wallet, the key's cap and the usage event in one statement.
        row = session.execute(_PG_WALLET_CHARGE, {
            "org": organization_id, "dataset_scope": wallet_scope(dataset.id),
            "platform_scope": wallet_scope(None), "tokens": tokens, "now": now,
            "request_id": request_id, "request_hash": request_hash, "key_id": key.id,
            "dataset_id": dataset.id, "version_id": version.id, "currency": currency,
            "unit_price": _unit_price(Money.zero(currency), tokens), "period": period,
            "note": f"dataset {dataset.id}", "cap": key.monthly_token_cap}).first()
        if row.id is not None:
            return Charge(tokens, Money.zero(currency), "wallet", int(row.balance), row.id)
        if row.balance is not None:
            # Debited, but the cap refused: the 402 rolls the debit back with the request.
            raise _cap_refusal(key, tokens)
        # No wallet held enough when looked at: the general path below tries every source.
    relax_commit_durability(session)
    _take_key_cap(session, key, tokens, period)
    amount, paid_by, remaining = Money.zero(currency), "free", None
    if tokens:
        remaining = _take_subscription(session, organization_id, dataset.id, tokens,
                                       now.date()) if subscribed else None
        if remaining is not None:
            paid_by = "subscription"
        else:
            remaining = _take_wallet(session, organization_id, dataset.id, tokens, request_id)
            if remaining is not None:
                paid_by = "wallet"
        if remaining is None:
            kind, currency, rating = _postpaid_price(session, organization_id, dataset,
                                                     now.date())
            amount, _ = rated_increment(session, organization_id, dataset.id, kind, period,
                                        tokens, currency, rating)
            for guard in BUDGET_GUARDS:
                guard(session, organization_id, dataset.id, amount)
            if _take_credit(session, organization_id, amount) is None:
                raise PaymentRequired(
                    "Nothing pays for this call: no subscription allowance, no token wallet "
                    "with enough tokens, and no postpaid credit line. Buy a token pack or "
                    "subscribe.", field="tokens")
            paid_by = "postpaid"
    # One INSERT ... RETURNING, the revision read by the INSERT itself.
    event_id = session.execute(_RECORD_CALL, {
        "request_id": request_id, "request_hash": request_hash,
        "organization_id": organization_id, "api_key_id": key.id, "dataset_id": dataset.id,
        "version_id": version.id, "kind": "data", "tokens": tokens,
        "unit_price": _unit_price(amount, tokens), "amount_minor": amount.minor,
        "currency": amount.currency, "paid_by": paid_by, "revision_of": dataset.id,
        "period": period, "occurred_at": now, "recorded_at": now}).scalar_one()
    return Charge(tokens, amount, paid_by, remaining, event_id)


# The call's usage event, with the dataset's supply-chain revision in force read by the INSERT.
_RECORD_CALL = insert(_EVENTS).values(supply_chain_revision_id=(
    select(SupplyChainRevision.__table__.c.id)
    .where(SupplyChainRevision.__table__.c.dataset_id == bindparam("revision_of"))
    .order_by(SupplyChainRevision.__table__.c.revision.desc()).limit(1).scalar_subquery())
).returning(_EVENTS.c.id)


# The commonest call — paid from a wallet, no subscription — in one round trip on PostgreSQL:
# the same steps as ``_take_wallet``, ``_take_key_cap`` and ``_RECORD_CALL`` (pick the
# dataset's wallet before the platform's, debit it under its re-checked balance condition, take
# the key's month within its cap — an upsert, so a month's first call creates the row —, log
# the debit, record the event), plus the relaxed commit of ``relax_commit_durability``. The
# cap is taken only from a wallet that was debited, and the event recorded only when both held
# (``:cap`` NULL: the key has no cap). One row always comes back: ``id`` set when charged;
# ``balance`` set but no ``id`` when the wallet was debited and the cap refused (the caller's
# 402 rolls the debit back); both empty when no wallet held enough, and nothing was written.
_PG_WALLET_CHARGE = text("""
WITH durability AS (SELECT set_config('synchronous_commit', 'off', true) AS setting),
picked AS (
    SELECT id FROM token_wallets
    WHERE organization_id = :org AND scope IN (:dataset_scope, :platform_scope)
      AND balance_tokens >= :tokens
    ORDER BY scope = :platform_scope LIMIT 1),
debited AS (
    UPDATE token_wallets SET balance_tokens = balance_tokens - :tokens, updated_at = :now
    WHERE id = (SELECT id FROM picked) AND balance_tokens >= :tokens
    RETURNING id, balance_tokens),
capped AS (
    INSERT INTO key_usage_months (api_key_id, period, tokens, updated_at)
    SELECT :key_id, :period, :tokens, :now FROM debited
    WHERE CAST(:cap AS bigint) IS NOT NULL AND :tokens <= CAST(:cap AS bigint)
    ON CONFLICT (api_key_id, period) DO UPDATE
        SET tokens = key_usage_months.tokens + EXCLUDED.tokens, updated_at = EXCLUDED.updated_at
        WHERE key_usage_months.tokens + EXCLUDED.tokens <= CAST(:cap AS bigint)
    RETURNING tokens AS month_tokens),
paid AS (
    SELECT debited.id, debited.balance_tokens FROM debited
    WHERE CAST(:cap AS bigint) IS NULL OR EXISTS (SELECT 1 FROM capped)),
logged AS (
    INSERT INTO wallet_entries (wallet_id, kind, delta_tokens, balance_after, reference, note,
                                created_at)
    SELECT id, 'debit', -:tokens, balance_tokens, :request_id, :note, :now FROM paid),
recorded AS (
    INSERT INTO usage_events (request_id, request_hash, organization_id, api_key_id, dataset_id,
                              version_id, kind, tokens, unit_price, amount_minor, currency,
                              paid_by, supply_chain_revision_id, period, occurred_at,
                              recorded_at)
    SELECT :request_id, :request_hash, :org, :key_id, :dataset_id, :version_id, 'data', :tokens,
           :unit_price, 0, :currency, 'wallet',
           (SELECT id FROM supply_chain_revisions WHERE dataset_id = :dataset_id
            ORDER BY revision DESC LIMIT 1),
           :period, :now, :now
    FROM paid, durability
    RETURNING id)
SELECT (SELECT id FROM recorded) AS id, (SELECT balance_tokens FROM debited) AS balance
""")


def _postpaid_price(session: Session, organization_id: int, dataset: Dataset,
                    today: dt.date) -> tuple[str, str, Callable[[int], int]]:
    """How tokens beyond the prepaid ones are priced: a subscriber's at its plan's overage
    rate, anyone else's at the dataset's metered rate card."""
    sub = session.scalar(select(Subscription).where(
        *_live_subscription(organization_id, dataset.id, today)))
    if sub is not None:
        plan = offer_from_dict(session.get(Offer, sub.offer_id).terms)
        return "overage", plan.currency, overage_rating(plan)
    metered = _metered_card(dataset)
    if metered is None:
        raise PaymentRequired(
            "Nothing pays for this call: no subscription allowance, no token wallet holding "
            "enough, and this dataset has no pay-as-you-go price.", field="tokens")
    _, card = metered
    return "data", card.currency, card_rating(card)


def _unit_price(amount: Money, tokens: int) -> str:
    return unit_price(amount.minor, amount.places, tokens)


def unit_price(minor: int, places: int, tokens: int) -> str:
    """The effective price per million tokens of a charge of ``minor`` units (``places``
    decimals), as a decimal string with six places, rounded half to even — in integers, since
    ingestion prices a thousand events a batch."""
    if not tokens:
        return "0"
    divisor = tokens * 10 ** places
    millionths, remainder = divmod(abs(minor) * 10 ** 12, divisor)
    if 2 * remainder > divisor or (2 * remainder == divisor and millionths % 2):
        millionths += 1
    whole, fraction = divmod(millionths, 1_000_000)
    return f"{'-' if minor < 0 and millionths else ''}{whole}.{fraction:06d}"


def tokens_remaining(session: Session, organization_id: int, dataset_id: int,
                     today: dt.date) -> int | None:
    """Tokens the organization can still spend on the dataset from prepaid sources (its
    subscription's allowance and its wallets); None when only a credit line pays."""
    total = 0
    found = False
    sub = session.scalar(select(Subscription).where(
        *_live_subscription(organization_id, dataset_id, today)))
    if sub is not None:
        total, found = total + sub.tokens_remaining, True
    for wallet in session.scalars(select(TokenWallet).where(
            TokenWallet.organization_id == organization_id,
            TokenWallet.scope.in_((wallet_scope(dataset_id), wallet_scope(None))))):
        total, found = total + wallet.balance_tokens, True
    return total if found else None


