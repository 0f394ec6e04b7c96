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

Refusals carry a stable ``code`` (the problem's ``code``; clients branch on it):

=========================  ====  ==========================================================
code                       HTTP  cause
=========================  ====  ==========================================================
``insufficient_tokens``    402   nothing pays: no allowance, no wallet holding enough, no
                                 credit line
``no_metered_price``       402   no allowance or wallet holds enough, and the dataset has no
                                 pay-as-you-go price (a credit line could not pay either)
``monthly_cap_reached``    402   the key's ``monthly_token_cap`` would be passed
``credit_limit_reached``   402   the credit line's limit would be passed
``budget_line_exhausted``  402   the budget line for API usage has not enough left (a guard)
``not_entitled``           403   the organization may not call this dataset's API
``version_not_listed``     403   only the listed version is served to a buyer not entitled
=========================  ====  ==========================================================

(``rate_limited``, 429, is the HTTP layer's.) The HTTP layer adds ``tokens_needed`` and
``tokens_available`` to every 402.

What a key can still spend (``tokens_available``, the ``X-Tokens-Remaining`` header): the
prepaid tokens that could pay — the live subscription's allowance left plus the dataset's and
the platform's wallets — plus what the credit line could still pay, capped by the key's monthly
cap left. The credit line's part is money turned into tokens: the largest number of tokens whose
charge on the month's rating (the same ``rated_increment`` a call is charged) fits in the least
of the line's limit left and, for a "block" budget, its API line's amount left
(``billing.budgets.guards``). A call is charged whole to one source, so a call of that many
tokens may still be refused when no single source holds them all.

A charge's list value (``list_amount``, ``UsageEvent.list_micros``): what its tokens are worth
at the price that would apply pay-as-you-go — a subscriber's plan's overage rate, else the
dataset's rate card at its first tier's price per million. Tiers are volume discounts that
depend on the month's total, which a prepaid call never joins, and a card's free tokens and
minimum charge are per month, not per call: the list value takes none of them, so it is the
same for the same tokens whoever pays and whenever. It is exact to a millionth of the minor
unit (a few dozen tokens are worth a fraction of a fen), and 0 when the dataset has no price.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from sqlalchemy import Update, bindparam, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.accounts.models import ApiKey
from market.catalog.models import (
    Dataset, DatasetVersion, ListingStatus, Offer, SupplyChainRevision,
)
from market.catalog.offers import metered_offer
from market.core.db import business_calendar, utcnow
from market.core.errors import Forbidden, InvalidInput, NotFound
from market.core.inputs import INT64_MAX
from billing.budgets.guards import USAGE_HEADROOM, commit_usage
from billing.entitlements import active_entitlement, wallet_scope
from billing.errors import PaymentRequired
from billing.models import (
    CreditLine, KeyUsageMonth, Subscription, SubscriptionStatus, TokenWallet, UsageCounter,
    UsageEvent, WalletEntry,
)
from pricing.errors import PricingError
from pricing.money import CURRENCY_MINOR_UNITS, MAX_MINOR, Money, UnitPrice, divide_half_up
from pricing.offers import (
    MeteredRateCard, RoyaltyRateCard, SubscriptionPlan, TierMode, offer_from_dict,
)
from pricing.rating import Usage, rate

# What a BIGINT holds: no count of tokens or amount may pass it.
MAX_TOKENS = INT64_MAX


@dataclass(frozen=True)
class Charge:
    tokens: int
    amount: Money
    paid_by: str  # subscription | wallet | postpaid | free
    # What the key can still spend after it (``tokens_available``), when the charge told it;
    # None: ask ``tokens_available``.
    remaining: int | None
    event_id: int
    list_micros: int = 0  # the list value, in millionths of the minor unit (module notes)
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
    if not _reachable(organization_id, dataset):
        raise NotFound("No such dataset.", field="dataset")
    version = session.scalar(select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset_id, DatasetVersion.number == number))
    if version is None:
        raise NotFound("No such version.", field="version")
    return _entitled(session, organization_id, dataset, version)


def callable_version_by_id(session: Session, organization_id: int,
                           version_id: int) -> tuple[Dataset, DatasetVersion, bool]:
    """``callable_version`` for a version named by its id; a version of a dataset the caller
    may not reach is not even confirmed (404)."""
    version = session.get(DatasetVersion, version_id)
    if version is None or not _reachable(organization_id, version.dataset):
        raise NotFound("No such version.", field="version")
    return _entitled(session, organization_id, version.dataset, version)


def _reachable(organization_id: int, dataset: Dataset | None) -> bool:
    """Whether metered calls may name the dataset at all: it is listed, or the caller's own."""
    return dataset is not None and (
        dataset.organization_id == organization_id
        or (dataset.listing is not None
            and dataset.listing.status == ListingStatus.APPROVED.value))


def _entitled(session: Session, organization_id: int, dataset: Dataset,
              version: DatasetVersion) -> tuple[Dataset, DatasetVersion, bool]:
    entitlement = active_entitlement(session, organization_id, dataset.id, kind="api",
                                     version_id=version.id)
    subscribed = entitlement is not None and entitlement.subscription_id is not None
    if dataset.organization_id == organization_id:
        return dataset, version, subscribed
    if dataset.listing.version_id != version.id and entitlement is None:
        raise Forbidden("Only the listed version is served to buyers.", field="version",
                        code="version_not_listed")
    if entitlement is not None or metered_card(dataset) is not None:
        return dataset, version, subscribed  # entitled, or pay as you go by the rate card
    raise Forbidden("The organization is not entitled to this dataset's API: subscribe, buy a "
                    "package that includes API tokens, or ask for a metered offer.",
                    field="dataset", code="not_entitled")


def metered_card(dataset: Dataset, kind: str = "metered"
                 ) -> tuple[Offer, MeteredRateCard | RoyaltyRateCard] | None:
    """The dataset's offer of ``kind`` that applies (``metered``: API calls; ``royalty``: tokens a
    model trained on the data produced; see ``market.catalog.offers.metered_offer``) and its
    parsed terms, or None."""
    offer = metered_offer(dataset, kind)
    return (offer, _terms(offer)) if offer is not None else None


def _terms(offer: Offer):
    """The offer's terms, parsed once for the object as loaded (a call asks several times)."""
    cached = getattr(offer, "_parsed_terms", None)
    if cached is None or cached[0] is not offer.terms:
        cached = offer._parsed_terms = (offer.terms, offer_from_dict(offer.terms))
    return cached[1]


# Charging ---------------------------------------------------------------------------------------

def find_replay(session: Session, request_id: str, request_hash: str) -> UsageEvent | None:
    """The event a retried call already paid for (same Idempotency-Key), or None."""
    event = session.scalar(select(UsageEvent).where(UsageEvent.request_id == request_id))
    if event is not None and event.request_hash not in (None, request_hash):
        raise InvalidInput("This Idempotency-Key was already used with a different request.",
                           field="Idempotency-Key")
    return event


def replayed_charge(event: UsageEvent) -> Charge:
    """The charge of a call already paid for, as a retry reports it (nothing charged again)."""
    return Charge(event.tokens, Money.from_minor(event.amount_minor, event.currency),
                  event.paid_by, None, event.id, event.list_micros, replayed=True)


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
        f"by this call ({tokens:,} tokens).", field="monthly_token_cap",
        code="monthly_cap_reached")


def _live_subscription(organization_id: int, dataset_id: int, today: dt.date,
                       columns=Subscription):
    return (columns.organization_id == organization_id,
            columns.dataset_id == dataset_id, columns.status == SubscriptionStatus.ACTIVE,
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
    if counter.tokens + tokens > MAX_TOKENS:
        raise InvalidInput(f"The month's tokens on this dataset would pass {MAX_TOKENS:,}, "
                           "more than can be counted.", field="tokens")
    # A volume-tier card can price a larger month lower than a smaller one; a call is never
    # charged less than nothing, so the month's charges then exceed its rating by the discount.
    after = max(rating(counter.tokens + tokens), before)
    counter.tokens += tokens
    counter.amount_minor = after
    return Money.from_minor(after - before, currency), counter


def take_credit(session: Session, organization_id: int, amount: Money) -> int | None:
    """Charge ``amount`` to the organization's live credit line in its currency; returns the
    line's id, None when it has none, and raises PaymentRequired when the limit would be
    passed (a metered call and a royalty batch are paid on credit alike). One conditional
    UPDATE, which never passes the limit: the common case is a single round trip."""
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
                          "limit.", field="credit_line", code="credit_limit_reached")


def charge_call(session: Session, *, key: ApiKey, dataset: Dataset, version: DatasetVersion,
                tokens: int, request_id: str, request_hash: str,
                now: dt.datetime | None = None, subscribed: bool = True) -> Charge:
    """Charge one data call (see the module notes for the order and the guarantees).

    A retry under the same Idempotency-Key is found by the caller (``find_replay``) before it
    serves anything; the request id's unique constraint stops a racing duplicate (an
    ``IntegrityError`` on ``usage_events.request_id``, once the racing call has committed).
    ``subscribed``: whether a subscription entitles the call (False skips asking it to pay).
    """
    now = now or utcnow()
    period = period_of(session, now)
    organization_id = key.organization_id
    currency = key.organization.default_currency
    if tokens and not subscribed and session.get_bind().dialect.name == "postgresql":
        # The wallet, the key's cap and the usage event in one statement.
        card = metered_card(dataset)
        listed = list_micros(tokens, _first_tier(card[1]) if card else None)
        row = session.execute(_PG_WALLET_CHARGE, {
            "org": organization_id, "dataset_scope": wallet_scope(dataset.id),
            "platform_scope": wallet_scope(None), "tokens": tokens, "now": now,
            "request_id": request_id, "request_hash": request_hash, "key_id": key.id,
            "dataset_id": dataset.id, "version_id": version.id, "currency": currency,
            "unit_price": _unit_price(Money.zero(currency), tokens), "period": period,
            "note": f"dataset {dataset.id}", "cap": key.monthly_token_cap,
            "list_micros": listed}).first()
        if row.id is not None:
            remaining = None
            if not row.on_credit:  # then the wallets and the cap say it all
                remaining = int(row.balance) + int(row.other_wallets)
                if key.monthly_token_cap is not None:
                    remaining = min(remaining, key.monthly_token_cap - int(row.month_tokens))
            return Charge(tokens, Money.zero(currency), "wallet", remaining, row.id, listed)
        if row.balance is not None:
            # Debited, but the cap refused: the 402 rolls the debit back with the request.
            raise _cap_refusal(key, tokens)
        # No wallet held enough when looked at: the general path below tries every source.
    relax_commit_durability(session)
    _take_key_cap(session, key, tokens, period)
    amount, paid_by, listed = Money.zero(currency), "free", 0
    if tokens:
        paid_by = _take_prepaid(session, organization_id, dataset.id, tokens, request_id,
                                now.date(), subscribed)
        if paid_by is not None:
            listed = list_micros(tokens, list_rate(session, organization_id, dataset,
                                                   now.date(), subscribed))
        else:
            price = postpaid_price(session, organization_id, dataset, now.date())
            if price is None:
                raise PaymentRequired(
                    "Nothing pays for this call: no subscription allowance, no token wallet "
                    "holding enough, and this dataset has no pay-as-you-go price.",
                    field="tokens", code="no_metered_price")
            amount, _ = rated_increment(session, organization_id, dataset.id, price.kind,
                                        period, tokens, price.currency, price.rating)
            commit_usage(session, organization_id, dataset.id, amount)
            if take_credit(session, organization_id, amount) is None:
                raise PaymentRequired(
                    "Nothing pays for this call: no subscription allowance, no token wallet "
                    "with enough tokens, and no postpaid credit line. Buy a token pack or "
                    "subscribe.", field="tokens", code="insufficient_tokens")
            paid_by, listed = "postpaid", list_micros(tokens, price.list_rate)
    # One INSERT ... RETURNING, the revision read by the INSERT itself.
    event_id = session.execute(_RECORD_CALL, {
        "request_id": request_id, "request_hash": request_hash,
        "organization_id": organization_id, "api_key_id": key.id, "dataset_id": dataset.id,
        "version_id": version.id, "kind": "data", "tokens": tokens,
        "unit_price": _unit_price(amount, tokens), "amount_minor": amount.minor,
        "currency": amount.currency, "paid_by": paid_by, "revision_of": dataset.id,
        "period": period, "occurred_at": now, "recorded_at": now,
        "list_micros": listed}).scalar_one()
    return Charge(tokens, amount, paid_by, None, event_id, listed)


def _take_prepaid(session: Session, organization_id: int, dataset_id: int, tokens: int,
                  request_id: str, today: dt.date, subscribed: bool) -> str | None:
    """Take the tokens from the subscription's allowance, else a wallet; what paid, or None."""
    if subscribed and _take_subscription(session, organization_id, dataset_id, tokens,
                                         today) is not None:
        return "subscription"
    if _take_wallet(session, organization_id, dataset_id, tokens, request_id) is not None:
        return "wallet"
    return None


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
# With it, what ``tokens_available`` needs when no credit line could pay: the other wallet's
# balance, the key's month after the call, and whether the organization has a live credit line.
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
                              recorded_at, list_micros)
    SELECT :request_id, :request_hash, :org, :key_id, :dataset_id, :version_id, 'data', :tokens,
           :unit_price, 0, :currency, 'wallet',
           (SELECT id FROM supply_chain_revisions WHERE dataset_id = :dataset_id
            ORDER BY revision DESC LIMIT 1),
           :period, :now, :now, :list_micros
    FROM paid, durability
    RETURNING id)
SELECT (SELECT id FROM recorded) AS id, (SELECT balance_tokens FROM debited) AS balance,
       (SELECT COALESCE(SUM(balance_tokens), 0) FROM token_wallets
        WHERE organization_id = :org AND scope IN (:dataset_scope, :platform_scope)
          AND id <> (SELECT id FROM picked)) AS other_wallets,
       (SELECT month_tokens FROM capped) AS month_tokens,
       EXISTS (SELECT 1 FROM credit_lines WHERE organization_id = :org
               AND suspended_at IS NULL) AS on_credit
""")


@dataclass(frozen=True)
class PostpaidPrice:
    """How tokens beyond the prepaid ones are priced for an organization and dataset."""

    kind: str  # the UsageCounter's: overage (a subscriber's plan) or data (the rate card)
    currency: str
    rating: Callable[[int], int]  # a month's tokens -> minor units
    list_rate: UnitPrice  # per million tokens, for the list value (module notes)
    # Month totals after which the rating may fall (a volume card's tier ends): between two
    # of them it never does.
    breaks: tuple[int, ...] = ()
    # The price per million when the rating is that one price, rounded once (an overage rate;
    # a card of one tier, no free tokens, no minimum): then it is inverted in closed form.
    flat: UnitPrice | None = None


def postpaid_price(session: Session, organization_id: int, dataset: Dataset,
                   today: dt.date) -> PostpaidPrice | None:
    """A subscriber's tokens are priced at its plan's overage rate, anyone else's at the
    dataset's metered rate card; None when neither applies."""
    return _price(dataset, _live_plan(session, organization_id, dataset.id, today))


def _price(dataset: Dataset, plan: SubscriptionPlan | None) -> PostpaidPrice | None:
    if plan is not None:
        return PostpaidPrice("overage", plan.currency, overage_rating(plan),
                             plan.overage_per_million, flat=plan.overage_per_million)
    metered = metered_card(dataset)
    if metered is None:
        return None
    _, card = metered
    breaks = tuple(card.free_tokens + tier.up_to for tier in card.tiers
                   if tier.up_to is not None) if card.mode is TierMode.VOLUME else ()
    flat = _first_tier(card) if len(card.tiers) == 1 and not card.free_tokens \
        and card.minimum_charge is None else None
    return PostpaidPrice("data", card.currency, card_rating(card), _first_tier(card), breaks,
                         flat)


def _live_plan(session: Session, organization_id: int, dataset_id: int,
               today: dt.date) -> SubscriptionPlan | None:
    """The plan of the organization's live subscription to the dataset, if any."""
    offer_id = session.scalar(select(Subscription.offer_id).where(
        *_live_subscription(organization_id, dataset_id, today)))
    return _plan(session, offer_id)


def _plan(session: Session, offer_id: int | None) -> SubscriptionPlan | None:
    plan = None if offer_id is None else _terms(session.get(Offer, offer_id))
    return plan if isinstance(plan, SubscriptionPlan) else None


def list_rate(session: Session, organization_id: int, dataset: Dataset, today: dt.date,
              subscribed: bool) -> UnitPrice | None:
    """The price per million tokens a call's list value is taken at (module notes)."""
    plan = _live_plan(session, organization_id, dataset.id, today) if subscribed else None
    if plan is not None:
        return plan.overage_per_million
    metered = metered_card(dataset)
    return None if metered is None else _first_tier(metered[1])


def _first_tier(card) -> UnitPrice:
    return card.tiers[0].price_per_million


def list_micros(tokens: int, rate_per_million: UnitPrice | None) -> int:
    """``tokens`` at ``rate_per_million``, in millionths of the currency's minor unit, rounded
    half up."""
    return micros_at(tokens, list_ratio(rate_per_million))


def list_ratio(rate_per_million: UnitPrice | None) -> tuple[int, int]:
    """The millionths of the minor unit one token is worth at the rate, as a fraction
    (numerator, denominator): worked out once for the many events of a batch."""
    if rate_per_million is None:
        return 0, 1
    places = CURRENCY_MINOR_UNITS[rate_per_million.currency]
    return rate_per_million.amount.scaleb(places).as_integer_ratio()


def micros_at(tokens: int, ratio: tuple[int, int]) -> int:
    """``tokens`` at a ``list_ratio``, rounded half up (in integers)."""
    numerator, denominator = ratio
    return divide_half_up(tokens * numerator, denominator)


def micros_to_dict(micros: int, currency: str) -> dict[str, str]:
    """A list value as JSON: exact (up to six more places than the currency's), never fewer
    places than the currency's own: ``{"amount": "0.0015", "currency": "CNY"}``."""
    places = CURRENCY_MINOR_UNITS[currency]
    value = Decimal(micros).scaleb(-(places + 6)).normalize()
    if value.as_tuple().exponent > -places:
        value = value.quantize(Decimal(1).scaleb(-places))
    return {"amount": format(value, "f"), "currency": currency}


def _unit_price(amount: Money, tokens: int) -> str:
    return unit_price(amount.minor, amount.places, tokens)


def unit_price(minor: int, places: int, tokens: int) -> str:
    """The effective price per million tokens of a charge of ``minor`` units (``places``
    decimals), as a decimal string with six places, rounded half up like every amount."""
    if not tokens:
        return "0"
    millionths = divide_half_up(abs(minor) * 10 ** 12, tokens * 10 ** places)
    whole, fraction = divmod(millionths, 1_000_000)
    return f"{'-' if minor < 0 and millionths else ''}{whole}.{fraction:06d}"


# What a key can still spend ----------------------------------------------------------------

@functools.cache
def _standing_statement():
    """Everything ``tokens_available`` reads, in one round trip: the live subscription's
    allowance left and plan, the wallets, the key's month, and — for the postpaid part — the
    credit line's limit left in the price's currency, the month's counters and the budget's
    headroom (``USAGE_HEADROOM``)."""
    sub, wallet, month = _SUBSCRIPTIONS.c, _WALLETS.c, _KEY_MONTHS.c
    line, counter = CreditLine.__table__.c, UsageCounter.__table__.c
    live = (sub.organization_id == bindparam("org"), sub.dataset_id == bindparam("dataset_id"),
            sub.status == SubscriptionStatus.ACTIVE,
            sub.current_period_start <= bindparam("today"),
            sub.current_period_end > bindparam("today"))

    def counted(column, kind: str):
        return select(column).where(
            counter.organization_id == bindparam("org"),
            counter.dataset_id == bindparam("dataset_id"), counter.kind == kind,
            counter.period == bindparam("period")).scalar_subquery()

    return select(
        select(sub.included_tokens + sub.rollover_tokens - sub.tokens_used).where(*live)
        .limit(1).scalar_subquery().label("allowance"),
        select(sub.offer_id).where(*live).limit(1).scalar_subquery().label("plan_offer_id"),
        select(func.coalesce(func.sum(wallet.balance_tokens), 0)).where(
            wallet.organization_id == bindparam("org"),
            wallet.scope.in_([bindparam("dataset_scope"), bindparam("platform_scope")]))
        .scalar_subquery().label("wallets"),
        select(month.tokens).where(month.api_key_id == bindparam("key_id"),
                                   month.period == bindparam("period"))
        .scalar_subquery().label("month_tokens"),
        select(line.limit_minor - line.used_minor).where(
            line.organization_id == bindparam("org"), line.currency == bindparam("currency"),
            line.suspended_at.is_(None)).scalar_subquery().label("credit_left"),
        counted(counter.tokens, "data").label("data_tokens"),
        counted(counter.amount_minor, "data").label("data_minor"),
        counted(counter.tokens, "overage").label("overage_tokens"),
        counted(counter.amount_minor, "overage").label("overage_minor"),
        USAGE_HEADROOM.label("budget_headroom"))


def tokens_available(session: Session, key: ApiKey, dataset_id: int | None,
                     now: dt.datetime | None = None) -> int:
    """What the key could still spend on the dataset (see the module notes): the prepaid tokens
    and what the credit line could pay, within the key's monthly cap. With no dataset (a call
    naming none that exists): the platform-wide wallet within the cap."""
    now = now or utcnow()
    organization_id = key.organization_id
    dataset = session.get(Dataset, dataset_id) if dataset_id is not None else None
    metered = metered_card(dataset) if dataset is not None else None
    period = period_of(session, now)
    currency = metered[1].currency if metered else key.organization.default_currency
    row = session.execute(_standing_statement(), {
        "org": organization_id, "dataset_id": dataset_id, "today": now.date(),
        "dataset_scope": wallet_scope(dataset_id), "platform_scope": wallet_scope(None),
        "key_id": key.id, "period": period, "currency": currency,
        "year": business_calendar(session).year_of(now)}).one()
    prepaid = int(row.wallets) + max(row.allowance or 0, 0)
    cap_left = None if key.monthly_token_cap is None else \
        key.monthly_token_cap - (row.month_tokens or 0)
    total = prepaid
    if dataset is not None and (cap_left is None or cap_left > prepaid):
        total += _credit_tokens(session, organization_id, dataset, row, currency, now)
    total = min(total, MAX_TOKENS)
    return max(total if cap_left is None else min(total, cap_left), 0)


def _credit_tokens(session: Session, organization_id: int, dataset: Dataset, row,
                   currency: str, now: dt.datetime) -> int:
    """The tokens the organization's credit line could still pay on the dataset, within what
    the budgets let it commit: the most whose charge on the month's rating fits. ``row``: the
    standing, with the credit line's limit left in ``currency``."""
    price = _price(dataset, _plan(session, row.plan_offer_id))
    if price is None:
        return 0
    left = row.credit_left
    headroom = row.budget_headroom
    if price.currency != currency:  # a plan priced in another currency than the card
        left = session.scalar(select(CreditLine.limit_minor - CreditLine.used_minor).where(
            CreditLine.organization_id == organization_id, CreditLine.currency == price.currency,
            CreditLine.suspended_at.is_(None)))
        headroom = session.scalar(select(USAGE_HEADROOM), {
            "org": organization_id, "currency": price.currency,
            "year": business_calendar(session).year_of(now)})
    if left is None:
        return 0
    left = left if headroom is None else min(left, headroom)
    if left < 0:
        return 0
    before = (row.overage_tokens, row.overage_minor) if price.kind == "overage" else \
        (row.data_tokens, row.data_minor)
    before_tokens, before_minor = int(before[0] or 0), int(before[1] or 0)
    if price.flat is not None:
        return _flat_tokens(price.flat, before_tokens, before_minor, left)
    return affordable_tokens(price.rating, before_tokens, before_minor, left, price.breaks)


def _flat_tokens(rate_per_million: UnitPrice, before_tokens: int, before_minor: int,
                 left: int) -> int:
    """``affordable_tokens`` of a rating that is one price rounded once, half up: the month
    may reach the most tokens ``t`` with ``t * price / 1M < before + left + 1/2`` minor."""
    numerator, denominator = rate_per_million.amount.scaleb(
        CURRENCY_MINOR_UNITS[rate_per_million.currency]).as_integer_ratio()
    if numerator <= 0:
        return MAX_TOKENS - before_tokens
    most = min(before_minor + left, MAX_MINOR)
    # t * numerator / denominator / 10**6 < most + 1/2  <=>  t < bound / (2 * numerator)
    bound = (2 * most + 1) * 10**6 * denominator
    month = -(-bound // (2 * numerator)) - 1
    return max(min(month, MAX_TOKENS) - before_tokens, 0)


def affordable_tokens(rating: Callable[[int], int], before_tokens: int, before_minor: int,
                      left: int, breaks: tuple[int, ...] = ()) -> int:
    """About the most tokens ``n`` such that every call of up to ``n`` tokens more is charged
    at most ``left`` on the month's ``rating`` (charged as ``rated_increment`` does: never
    below nothing) — never more, and short of the most by at most a millionth. Between two
    ``breaks`` the rating never falls, so there a bisection finds it; at most ``MAX_TOKENS``
    in the month."""
    ceiling = MAX_TOKENS - before_tokens

    def fits(n: int) -> bool:
        try:
            return max(rating(before_tokens + n), before_minor) - before_minor <= left
        except PricingError:  # beyond what an amount can hold
            return False

    def bisect(low: int, high: int) -> int:  # fits(low), not fits(high)
        while high - low > max(1, low >> 20):
            middle = (low + high) // 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        return low

    start = 0
    for end in sorted(b - before_tokens for b in breaks if before_tokens < b < MAX_TOKENS):
        if not fits(end):
            return bisect(start, end)
        start = end
    # The last stretch: from a guess at the price of the next million tokens, double until
    # a count does not fit.
    try:
        million = max(rating(before_tokens + start + 10**6) - max(
            rating(before_tokens + start), before_minor), 0)
    except PricingError:
        million = 0
    high = min(start + max(left * 10**6 // million if million else 10**6, 1), ceiling)
    while fits(high):
        if high == ceiling:
            return high
        start, high = high, min(2 * high, ceiling)
    return bisect(start, high)
