"""Usage: model companies' royalty reports, and the usage report of an organization.

Royalty ingestion
-----------------
A model company reports, in batches of up to 1,000, the tokens a model trained on a dataset
produced. Each event is charged by the dataset's royalty rate card (an offer of kind
``royalty``), postpaid on the organization's credit line, and written as a ``UsageEvent`` of kind
``royalty`` paid by ``postpaid`` (``free`` for zero tokens).

- Each event id is accepted once, forever: its ``UsageEvent.request_id`` is
  ``event:<organization>:<id>``, unique. A repeated id (in the same batch or any later one) is
  reported ``duplicate`` with what the first was charged, and charges nothing.
- A rejected event (not a well-formed event — a field missing, of the wrong type or beyond what
  its column holds, given to the service as an ``InvalidEvent`` naming every field at fault —,
  unknown dataset, no royalty price, negative tokens, occurred more than five minutes in the
  future, too many tokens to price, nothing to pay with) never blocks the valid ones; the
  outcome of each is reported in the batch's order. Only a batch that is not a list of 1 to
  ``MAX_BATCH`` events is refused whole (the API's 422).
- Each event keeps its list value (``UsageEvent.list_micros``): its tokens at the royalty card's
  first tier (``billing.metering.charge``'s notes).
- Late events are adjustments to the open month. An event that occurred in an earlier month is
  accepted into the *current* period (``UsageEvent.period`` is the month it was recorded in,
  ``occurred_at`` keeps when it really happened): a closed month — invoiced by
  ``billing.metering.postpaid`` — is never rewritten, and its invoice stays what was billed.
- Graduated prices depend on the month's total: each dataset's events of a batch are rated
  together by ``metering.rated_increment`` (the month's rating after them minus before), and that
  increment is split across the events by their tokens, largest remainder first — so the
  month's events add up exactly to the rating of the month's total.
- The credit line is charged once per batch (and currency) by the conditional UPDATE of
  ``metering.take_credit``, which never passes the limit. When the whole batch would pass it,
  the longest run of events from the batch's start that fits is charged and the rest are
  rejected ``payment_required``.

It is done set-wise, for throughput: one query for the datasets, one rating per dataset, one
credit-line update, and the events written in one COPY on PostgreSQL
(``market.core.db.insert_rows``). Most batches repeat no id already recorded, so the first attempt
does not look the ids up: it charges and writes inside a savepoint, where an id recorded before
breaks the unique constraint and rolls the attempt back, charges and all. The second attempt
looks the ids up first and reports those ``duplicate``. An id that a concurrent request is
recording makes the write wait for that request: once it commits, the id is a duplicate like any
other; only an id taken in the instant between the second attempt's look-up and its write
makes the batch 409 (send it again), and nothing is ever charged twice.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import ColumnElement, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from billing.metering import charge as metering
from billing.budgets.guards import commit_usage
from billing.errors import PaymentRequired
from billing.metering.charge import card_rating, period_of, rated_increment
from billing.models import CreditLine, UsageCounter, UsageEvent
from market.accounts.models import ApiKey
from market.catalog.models import Dataset, ListingStatus
from market.catalog.services import current_supply_chain_id
from market.core.db import breaks_unique, business_calendar, business_day_of, insert_rows, utcnow
from market.core.errors import Conflict, InvalidInput
from pricing.allocation import split_minor
from pricing.errors import PricingError
from pricing.money import Money, minor_to_dict, minor_units
from pricing.periods import month_name

MAX_BATCH = 1_000
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class ItemError:
    code: str  # invalid | not_found | no_royalty_price | payment_required
    field: str
    message: str
    # An event that is not what an event must be: every field at fault, as a 422 names them.
    errors: dict[str, list[str]] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "field": self.field, "message": self.message}
        if self.errors is not None:
            data["errors"] = self.errors
        return data


@dataclass(frozen=True)
class InvalidEvent:
    """An event of a batch that is not a well-formed event (its fields, their types and
    bounds): rejected ``invalid`` on its own, never holding up the rest of the batch."""

    id: str | None  # the id it was sent with, when that is a string
    error: ItemError


@dataclass
class Outcome:
    """What became of one reported event; what it was charged, in minor units (a batch has a
    thousand of these, so no ``Money`` is built for each)."""

    id: str | None  # None: an invalid event sent without a string id
    status: str  # accepted | duplicate | rejected
    tokens: int | None  # None: an invalid event whose tokens are not a count
    minor: int | None = None
    currency: str | None = None
    error: ItemError | None = None

    def to_dict(self, amounts: dict[tuple[int, str], dict[str, str]] | None = None
                ) -> dict[str, Any]:
        """``amounts``: JSON forms of amounts already formatted, shared by the outcomes of a
        batch (whose events are mostly charged a few distinct amounts)."""
        amount = None
        if self.minor is not None:
            amounts = {} if amounts is None else amounts
            key = (self.minor, self.currency)
            amount = amounts.get(key)
            if amount is None:
                amount = amounts[key] = minor_to_dict(*key)
        data: dict[str, Any] = {"id": self.id, "status": self.status, "tokens": self.tokens,
                                "amount": amount}
        if self.error is not None:
            data["error"] = self.error.to_dict()
        return data


@dataclass(frozen=True)
class IngestResult:
    results: list[Outcome]

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.results if outcome.status == status)

    def to_dict(self) -> dict[str, Any]:
        amounts: dict[tuple[int, str], dict[str, str]] = {}
        return {"results": [outcome.to_dict(amounts) for outcome in self.results],
                "accepted": self.count("accepted"), "duplicates": self.count("duplicate"),
                "rejected": self.count("rejected")}


@dataclass
class _Group:
    """One dataset's chargeable events of a batch (indices into the batch, in its order)."""

    dataset_id: int
    currency: str
    rating: Callable[[int], int]
    indices: list[int] = field(default_factory=list)


def request_id_of(organization_id: int, event_id: str) -> str:
    return f"event:{organization_id}:{event_id}"


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:  # an ISO time without an offset is taken as UTC
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def _visible(dataset: Dataset | None, organization_id: int) -> bool:
    """A dataset a caller may report on: listed, or its own (the same rule as data calls)."""
    if dataset is None:
        return False
    return dataset.organization_id == organization_id or (
        dataset.listing is not None
        and dataset.listing.status == ListingStatus.APPROVED.value)


def ingest_royalties(session: Session, *, organization_id: int, api_key_id: int | None,
                     events: list[dict[str, Any] | InvalidEvent],
                     now: dt.datetime | None = None) -> IngestResult:
    """Charge and record a batch of royalty events (see the module notes); every event gets an
    outcome, in the batch's order, an ``InvalidEvent`` its rejection. Never commits."""
    invalid = {i: event for i, event in enumerate(events) if isinstance(event, InvalidEvent)}
    if not invalid:
        return _ingest_valid(session, organization_id, api_key_id, events, now)
    valid = [event for event in events if not isinstance(event, InvalidEvent)]
    outcomes = iter(_ingest_valid(session, organization_id, api_key_id, valid, now).results
                    if valid else [])
    return IngestResult([
        Outcome(invalid[i].id, "rejected", None, error=invalid[i].error) if i in invalid
        else next(outcomes) for i in range(len(events))])


def _ingest_valid(session: Session, organization_id: int, api_key_id: int | None,
                  events: list[dict[str, Any]], now: dt.datetime | None) -> IngestResult:
    now = now or utcnow()
    request_ids = [request_id_of(organization_id, event["id"]) for event in events]
    try:
        with session.begin_nested():
            return _ingest(session, organization_id, api_key_id, events, request_ids, now,
                           taken={})
    except IntegrityError as exc:
        if not breaks_unique(exc, UsageEvent.__table__, "request_id"):
            raise
    taken = {row.request_id: row for row in session.execute(
        select(UsageEvent.request_id, UsageEvent.tokens, UsageEvent.amount_minor,
               UsageEvent.currency).where(_one_of(session, UsageEvent.request_id,
                                                  list(set(request_ids)))))}
    try:
        return _ingest(session, organization_id, api_key_id, events, request_ids, now, taken)
    except IntegrityError as exc:
        if not breaks_unique(exc, UsageEvent.__table__, "request_id"):
            raise
        raise Conflict("Some of these event ids were reported by another request at the same "
                       "time; send the batch again (those come back as duplicates).",
                       field="events") from None


def _ingest(session: Session, organization_id: int, api_key_id: int | None,
            events: list[dict[str, Any]], request_ids: list[str], now: dt.datetime,
            taken: dict[str, Any]) -> IngestResult:
    """One attempt at the batch, given the ids already recorded (``taken``)."""
    period = period_of(session, now)
    outcomes: list[Outcome | None] = [None] * len(events)
    occurred: list[dt.datetime | None] = [None] * len(events)  # in UTC, once validated
    dataset_ids = {event["dataset_id"] for event in events}
    datasets = {d.id: d for d in session.scalars(
        select(Dataset).where(Dataset.id.in_(dataset_ids))
        .options(joinedload(Dataset.offers), joinedload(Dataset.listing))).unique()}
    cards: dict[int, Any] = {}
    for dataset_id, dataset in datasets.items():
        if _visible(dataset, organization_id):
            cards[dataset_id] = metering.metered_card(dataset, "royalty")
    # The list value of a token on each dataset: its royalty card's first tier.
    ratios = {dataset_id: metering.list_ratio(card[1].tiers[0].price_per_million)
              for dataset_id, card in cards.items() if card is not None}
    listed = [0] * len(events)  # each event's list value (millionths of the minor unit)

    first_of: dict[str, int] = {}  # request id -> the batch's first live event with it
    later: list[tuple[int, int]] = []  # (a repeat, the event it repeats)
    chargeable: list[int] = []
    free: list[int] = []
    for i, event in enumerate(events):
        request_id, tokens = request_ids[i], event["tokens"]
        if request_id in taken:
            row = taken[request_id]
            outcomes[i] = Outcome(event["id"], "duplicate", row.tokens, row.amount_minor,
                                  row.currency)
            continue
        if request_id in first_of:
            later.append((i, first_of[request_id]))
            continue
        error = None
        occurred[i] = _utc(event["occurred_at"])
        if tokens < 0:
            error = ItemError("invalid", "tokens", "Tokens cannot be negative.")
        elif occurred[i] > now + FUTURE_TOLERANCE:
            error = ItemError("invalid", "occurred_at",
                              "occurred_at is more than five minutes in the future.")
        elif event["dataset_id"] not in cards:
            # Never the dataset's title: another organization's unlisted dataset stays unknown.
            error = ItemError("not_found", "dataset_id", "No such dataset.")
        elif cards[event["dataset_id"]] is None:
            error = ItemError("no_royalty_price", "dataset_id",
                              "This dataset has no royalty price.")
        else:
            listed[i] = metering.micros_at(tokens, ratios[event["dataset_id"]])
            if listed[i] > metering.MAX_TOKENS:  # a value no amount column holds
                error = ItemError("invalid", "tokens", "Too many tokens to price.")
        if error is not None:
            outcomes[i] = Outcome(event["id"], "rejected", tokens, error=error)
            continue
        first_of[request_id] = i
        (chargeable if tokens else free).append(i)

    for i in free:
        currency = cards[events[i]["dataset_id"]][1].currency
        outcomes[i] = Outcome(events[i]["id"], "accepted", 0, 0, currency)
    paid_by: dict[int, str] = {i: "free" for i in free}
    for i, (minor, currency) in _charge(session, organization_id, period, events, chargeable,
                                        cards, outcomes).items():
        outcomes[i] = Outcome(events[i]["id"], "accepted", events[i]["tokens"], minor, currency)
        paid_by[i] = "postpaid"

    _insert(session, organization_id, api_key_id, period, now, events, request_ids,
            occurred, outcomes, paid_by, listed)
    for i, first in later:
        original = outcomes[first]
        outcomes[i] = Outcome(events[i]["id"], "duplicate", original.tokens, original.minor,
                              original.currency) if original.status == "accepted" else \
            Outcome(events[i]["id"], "rejected", original.tokens, error=original.error)
    return IngestResult(outcomes)


def _charge(session: Session, organization_id: int, period: str, events: list[dict],
            chargeable: list[int], cards: dict[int, Any],
            outcomes: list[Outcome | None]) -> dict[int, tuple[int, str]]:
    """Rate and charge the chargeable events; returns the amount of each one charged (minor
    units, currency) and writes the outcome of each refused."""
    lines = set(session.scalars(select(CreditLine.currency).where(
        CreditLine.organization_id == organization_id, CreditLine.suspended_at.is_(None))))
    by_currency: dict[str, dict[int, _Group]] = defaultdict(dict)
    for i in chargeable:
        dataset_id = events[i]["dataset_id"]
        card = cards[dataset_id][1]
        if card.currency not in lines:
            _refuse(events, [i], outcomes, "credit_line",
                    f"Royalties are paid on a postpaid credit line, and the organization has "
                    f"none in {card.currency}; ask the platform for one.")
            continue
        groups = by_currency[card.currency]
        if dataset_id not in groups:
            groups[dataset_id] = _Group(dataset_id, card.currency, card_rating(card))
        groups[dataset_id].indices.append(i)

    charged: dict[int, tuple[int, str]] = {}
    for currency, groups in by_currency.items():
        priced = [group for group in groups.values() if _priceable(events, group, outcomes)]
        charged.update(_charge_currency(session, organization_id, period, events, priced,
                                        currency, outcomes))
    return charged


def _priceable(events: list[dict], group: _Group, outcomes: list[Outcome | None]) -> bool:
    """Whether the group's events can be priced together (an amount holds at most
    ``MAX_MINOR``); if not, the events too large to price alone are rejected, then the rest
    if they still are together. One rating a dataset when all is well."""

    def prices(tokens: int) -> bool:
        try:
            group.rating(tokens)
        except PricingError:
            return False
        return tokens <= metering.MAX_TOKENS

    if prices(sum(events[i]["tokens"] for i in group.indices)):
        return True
    too_large = [i for i in group.indices if not prices(events[i]["tokens"])]
    _reject_invalid(events, too_large, outcomes, "Too many tokens to price.")
    group.indices = [i for i in group.indices if i not in set(too_large)]
    if group.indices and not prices(sum(events[i]["tokens"] for i in group.indices)):
        _reject_invalid(events, group.indices, outcomes, "Together with the batch's other "
                        "events on this dataset, too many tokens to price; send fewer at once.")
        group.indices = []
    return bool(group.indices)


def _reject_invalid(events: list[dict], indices: list[int], outcomes: list[Outcome | None],
                    message: str) -> None:
    for i in indices:
        outcomes[i] = Outcome(events[i]["id"], "rejected", events[i]["tokens"],
                              error=ItemError("invalid", "tokens", message))


def _refuse(events: list[dict], indices: list[int], outcomes: list[Outcome | None],
            field_name: str, message: str) -> None:
    for i in indices:
        outcomes[i] = Outcome(events[i]["id"], "rejected", events[i]["tokens"],
                              error=ItemError("payment_required", field_name, message))


def _rate(session: Session, organization_id: int, period: str, events: list[dict],
          groups: list[_Group], upto: int | None = None
          ) -> list[tuple[_Group, list[int], Money, UsageCounter]]:
    """Rate each group's events (those before batch position ``upto``): one
    ``rated_increment`` a dataset."""
    rated = []
    for group in groups:
        indices = [i for i in group.indices if upto is None or i < upto]
        if not indices:
            continue
        tokens = sum(events[i]["tokens"] for i in indices)
        amount, counter = rated_increment(session, organization_id, group.dataset_id,
                                          "royalty", period, tokens, group.currency,
                                          group.rating)
        rated.append((group, indices, amount, counter))
    return rated


def _rate_priceable(session: Session, organization_id: int, period: str, events: list[dict],
                    groups: list[_Group], outcomes: list[Outcome | None]
                    ) -> tuple[list, list[_Group]]:
    """``_rate`` of every group, but a group whose month (with what the month holds already)
    is too large to price is rejected ``invalid``: the rated groups, and those kept."""
    rated, kept = [], []
    for group in groups:
        try:
            rated.extend(_rate(session, organization_id, period, events, [group]))
        except (PricingError, InvalidInput):
            _reject_invalid(events, group.indices, outcomes, "The month's tokens on this "
                            "dataset would be too many to price.")
            continue
        kept.append(group)
    return rated, kept


def _unrate(events: list[dict], rated) -> None:
    """Give the counters back what ``_rate`` added (the rows stay locked by this transaction)."""
    for _group, indices, amount, counter in rated:
        counter.tokens -= sum(events[i]["tokens"] for i in indices)
        counter.amount_minor -= amount.minor


def _charge_currency(session: Session, organization_id: int, period: str,
                     events: list[dict], groups: list[_Group], currency: str,
                     outcomes: list[Outcome | None]) -> dict[int, tuple[int, str]]:
    rated, groups = _rate_priceable(session, organization_id, period, events, groups,
                                    outcomes)
    kept = []
    for entry in rated:
        group, indices, amount, counter = entry
        try:
            commit_usage(session, organization_id, group.dataset_id, amount)
        except PaymentRequired as refusal:
            _unrate(events, [entry])
            _refuse(events, indices, outcomes, refusal.field or "budget", refusal.detail)
            groups = [g for g in groups if g is not group]
            continue
        kept.append(entry)
    rated = kept
    if not rated:
        return {}
    total = Money.from_minor(sum(amount.minor for _, _, amount, _ in rated), currency)
    try:
        line = metering.take_credit(session, organization_id, total)
    except PaymentRequired:
        _unrate(events, rated)
        rated = _fit_credit(session, organization_id, period, events, groups, currency)
        total = Money.from_minor(sum(amount.minor for _, _, amount, _ in rated), currency)
        line = metering.take_credit(session, organization_id, total) if rated else True
    if line is None:  # suspended since it was looked up
        _unrate(events, rated)
        rated = []
    accepted = {i for _, indices, _, _ in rated for i in indices}
    _refuse(events, [i for g in groups for i in g.indices if i not in accepted], outcomes,
            "credit_line", "The credit line's limit would be passed by this event; pay the "
                           "open usage invoice or ask for a higher limit.")
    charged: dict[int, tuple[int, str]] = {}
    for _group, indices, amount, _counter in rated:
        parts = split_minor(amount.minor, [events[i]["tokens"] for i in indices])
        for i, part in zip(indices, parts):
            charged[i] = (part, currency)
    return charged


def _fit_credit(session: Session, organization_id: int, period: str, events: list[dict],
                groups: list[_Group], currency: str):
    """Rate the longest run of events from the batch's start that the credit line still
    covers; the line is locked first so what is left of it cannot change meanwhile."""
    left = session.execute(select(CreditLine.limit_minor - CreditLine.used_minor).where(
        CreditLine.organization_id == organization_id, CreditLine.currency == currency,
        CreditLine.suspended_at.is_(None)).with_for_update()).scalar()
    if left is None or left < 0:
        return []
    counters = {}
    for group in groups:
        counter = session.scalar(select(UsageCounter).where(
            UsageCounter.organization_id == organization_id,
            UsageCounter.dataset_id == group.dataset_id, UsageCounter.kind == "royalty",
            UsageCounter.period == period))
        counters[group.dataset_id] = (counter.tokens, counter.amount_minor)

    def cost(upto: int) -> int:
        total = 0
        for group in groups:
            tokens = sum(events[i]["tokens"] for i in group.indices if i < upto)
            if tokens:
                before_tokens, before_amount = counters[group.dataset_id]
                total += group.rating(before_tokens + tokens) - before_amount
        return total

    positions = sorted(i for group in groups for i in group.indices)
    low, high = 0, len(positions)  # the first `low` events fit; `high` and more do not
    while low < high:
        middle = (low + high + 1) // 2
        if cost(positions[middle - 1] + 1) <= left:
            low = middle
        else:
            high = middle - 1
    if not low:
        return []
    return _rate(session, organization_id, period, events, groups,
                 upto=positions[low - 1] + 1)


def _one_of(session: Session, column, values: list) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``, one parameter instead of a
    thousand to render and bind."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam("values", values, type_=ARRAY(column.type)))
    return column.in_(values)


def _insert(session: Session, organization_id: int, api_key_id: int | None, period: str,
            now: dt.datetime, events: list[dict], request_ids: list[str],
            occurred: list[dt.datetime | None], outcomes: list[Outcome | None],
            paid_by: dict[int, str], listed: list[int]) -> None:
    """Write the usage event of each paid (or free) event; an id already recorded breaks the
    unique constraint (IntegrityError)."""
    if not paid_by:
        return
    revisions = {dataset_id: current_supply_chain_id(session, dataset_id)
                 for dataset_id in {events[i]["dataset_id"] for i in paid_by}}
    places = {currency: minor_units(currency)
              for currency in {outcomes[i].currency for i in paid_by}}
    # The same on every row of a batch.
    constant = {"organization_id": organization_id, "api_key_id": api_key_id,
                "version_id": None, "kind": "royalty", "period": period, "recorded_at": now,
                "order_id": None}
    rows = []
    for i in sorted(paid_by):
        event, outcome = events[i], outcomes[i]
        rows.append({
            "request_id": request_ids[i],
            "dataset_id": event["dataset_id"], "model": event.get("model"),
            "tokens": event["tokens"],
            "unit_price": metering.unit_price(outcome.minor, places[outcome.currency],
                                              event["tokens"]),
            "amount_minor": outcome.minor, "currency": outcome.currency,
            "list_micros": listed[i], "paid_by": paid_by[i], "supply_chain_revision_id": revisions[event["dataset_id"]],
            "occurred_at": occurred[i]})
    insert_rows(session, UsageEvent.__table__, rows, constant=constant)


# The usage report ---------------------------------------------------------------------------
#
# One report, read by the API and by the storefront's usage page alike. Its days are business
# days of charging (``recorded_at``): a late royalty event counts on the day and in the month it
# was charged, the month its invoice bills, while each API row also names the month its events
# occurred in. A report groups by one of ``GROUPINGS`` (and, for the API's rows, by those two
# months), always per currency; ``tokens_by_day`` gives the page its chart.

GROUPINGS = ("day", "dataset", "key")
MAX_REPORT_DAYS = 366
RECENT_DAYS = 30  # the usage page's range when none is asked for: the last 30 days


@dataclass(frozen=True)
class UsageLine:
    """One group of an organization's usage events in one currency: the tokens, what they were
    charged (``amount_minor``), what they were worth at list price (``list_micros``, millionths
    of the minor unit) and the calls."""

    group: dict[str, Any]  # the grouping's values (``day``, ``dataset_id`` and its titles, ...)
    currency: str
    tokens: int
    amount_minor: int
    list_micros: int
    calls: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.group, "tokens": self.tokens, "calls": self.calls,
                "amount": Money.from_minor(self.amount_minor, self.currency).to_dict(),
                "list_amount": metering.micros_to_dict(self.list_micros, self.currency)}


def month_range(start: dt.date | None, end: dt.date | None,
                today: dt.date) -> tuple[dt.date, dt.date]:
    """The API's range: the one asked for, with a missing end filled in as its month's; the
    current month when neither is given."""
    anchor = start or end or today
    first = anchor.replace(day=1)
    last = anchor.replace(day=calendar.monthrange(anchor.year, anchor.month)[1])
    return start or first, end or last


def recent_range(start: dt.date | None, end: dt.date | None,
                 today: dt.date) -> tuple[dt.date, dt.date]:
    """The usage page's range: the one asked for, the ``RECENT_DAYS`` days to today when neither
    end is given; a lone start after today shows that day, and a lone end or start never makes
    the range longer than ``MAX_REPORT_DAYS``."""
    end = end or today
    start = start or end - dt.timedelta(days=RECENT_DAYS - 1)
    if start > end:
        end = start
    if (end - start).days + 1 > MAX_REPORT_DAYS:
        start = end - dt.timedelta(days=MAX_REPORT_DAYS - 1)
    return start, end


def _charged_between(session: Session, organization_id: int, start: dt.date,
                     end: dt.date) -> tuple[ColumnElement[bool], ...]:
    """The organization's events charged from ``start`` to ``end`` (business days, both
    included)."""
    calendar = business_calendar(session)
    since, until = calendar.start_of_day(start), calendar.day_bounds(end)[1]
    # An event's period is the business month it was recorded in: naming it lets the database
    # read the organization's months by index before it checks the days.
    return (UsageEvent.organization_id == organization_id,
            UsageEvent.period >= month_name(start.year, start.month),
            UsageEvent.period <= month_name(end.year, end.month),
            UsageEvent.recorded_at >= since, UsageEvent.recorded_at < until)


def usage_lines(session: Session, organization_id: int, start: dt.date, end: dt.date,
                by: str | None = None, *, months: bool = False) -> list[UsageLine]:
    """The organization's usage charged from ``start`` to ``end`` grouped ``by`` a grouping,
    ``kind``, ``paid_by`` or nothing (the totals), each group per currency and, with ``months``,
    per month occurred in (``occurred_period``) and charged to (``charged_period``). Ordered by
    the grouping (usage without an API key last), then the months and the currency. Aggregated
    in SQL."""
    columns: list = {
        None: [],
        "day": [business_day_of(session, UsageEvent.recorded_at).label("day")],
        "dataset": [UsageEvent.dataset_id.label("dataset_id"),
                    Dataset.title_en.label("dataset_title"),
                    Dataset.title_zh.label("dataset_title_zh")],
        "key": [UsageEvent.api_key_id.label("api_key_id"), ApiKey.prefix.label("key_prefix"),
                ApiKey.name.label("key_name")],
        "kind": [UsageEvent.kind.label("kind")],
        "paid_by": [UsageEvent.paid_by.label("paid_by")],
    }[by]
    if months:
        columns += [func.substr(business_day_of(session, UsageEvent.occurred_at), 1, 7)
                    .label("occurred_period"), UsageEvent.period.label("charged_period")]
    query = select(*columns, UsageEvent.currency.label("currency"),
                   func.sum(UsageEvent.tokens).label("tokens"),
                   func.sum(UsageEvent.amount_minor).label("amount_minor"),
                   func.sum(UsageEvent.list_micros).label("list_micros"),
                   func.count(UsageEvent.id).label("calls")
                   ).where(*_charged_between(session, organization_id, start, end))
    order = columns
    if by == "dataset":
        query = query.join(Dataset, Dataset.id == UsageEvent.dataset_id, isouter=True)
    elif by == "key":
        query = query.join(ApiKey, ApiKey.id == UsageEvent.api_key_id, isouter=True)
        order = [UsageEvent.api_key_id.is_(None), *columns]
    query = query.group_by(*columns, UsageEvent.currency).order_by(*order, UsageEvent.currency)
    names = [column.name for column in columns]
    # PostgreSQL sums BIGINTs to a numeric: back to exact ints.
    return [UsageLine({name: row._mapping[name] for name in names}, row.currency,
                      int(row.tokens), int(row.amount_minor), int(row.list_micros),
                      int(row.calls))
            for row in session.execute(query)]


def tokens_by_day(session: Session, organization_id: int, start: dt.date,
                  end: dt.date) -> list[tuple[dt.date, int]]:
    """Every business day from ``start`` to ``end`` with the tokens charged on it (0 when
    none), whatever their currency."""
    day = business_day_of(session, UsageEvent.recorded_at).label("day")
    per_day = {row.day: int(row.tokens) for row in session.execute(
        select(day, func.sum(UsageEvent.tokens).label("tokens"))
        .where(*_charged_between(session, organization_id, start, end)).group_by(day))}
    days = (start + dt.timedelta(days=n) for n in range((end - start).days + 1))
    return [(d, per_day.get(d.isoformat(), 0)) for d in days]


def usage_report(session: Session, organization_id: int, start: dt.date, end: dt.date,
                 group_by: str) -> dict[str, Any]:
    """The API's report: the organization's usage charged from ``start`` to ``end`` (business
    days, both included) — a late royalty event in the day and month it was charged in, which
    is the month its invoice bills — grouped by day (charged), dataset or API key, with totals
    by kind and by what paid; each row is in one currency and says the month its events
    occurred in (``occurred_period``) and the month they were charged to (``charged_period``),
    so a late event's row stands apart. Each figure has what was charged (``amount``) and what
    the tokens were worth at list price (``list_amount``, exact; see
    ``billing.metering.charge``)."""

    def lines(by: str | None, months: bool = False) -> list[dict[str, Any]]:
        return [line.to_dict() for line in usage_lines(session, organization_id, start, end,
                                                       by, months=months)]

    return {"start": start, "end": end, "group_by": group_by,
            "rows": lines(group_by, months=True), "totals": lines(None),
            "by_kind": lines("kind"), "by_paid_by": lines("paid_by")}
