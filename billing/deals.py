"""Custom deals (定制模式): a buyer's demand, suppliers' quotes, milestone orders, delivery and
its acceptance check.

The journey:

1. a buyer posts a ``Demand`` (sector, modality, volume, quality thresholds, budget, deadline);
2. suppliers answer with one ``DealQuote`` each: milestones (``pricing.CustomQuote``) and
   acceptance criteria, minimum scores per dimension of the quality report
   (``market.catalog.quality``), at least as strict as the demand's thresholds;
3. the buyer accepts one quote: a ``Deal`` and one ``Order`` per milestone (kind ``custom``).
   The deposit order is payable at once, the others are ``scheduled``; the other quotes are
   declined. Two accepts racing for one demand: a conditional update lets one win, the other
   gets 409;
4. the supplier delivers a version of the quoted dataset (once the deposit is paid). The
   acceptance check compares each criterion with that version's quality report and stores
   pass or fail per criterion in ``Deal.acceptance``; the delivery milestone becomes payable;
5. the buyer accepts the delivery (the acceptance milestone becomes payable) or disputes it.
   When a criterion failed, accepting needs an explicit waiver with a reason: a failed check
   is never accepted by a mere click, and the waiver is kept on the criterion it waives;
6. milestone orders are paid like any order (``billing.payments``); when the final one is paid,
   the buyer gets a perpetual download entitlement to the delivered version and a transaction
   certificate (``on_milestone_paid``).

The last milestone must be the acceptance payment, so full payment (and with it the
entitlement) always follows an accepted delivery.

Before a quote is accepted, the buyer may cancel its demand (with a reason; every quote still
submitted is declined) and a supplier may withdraw its quote. A demand leaves ``open`` only by
a conditional update and a quote leaves ``submitted`` only by one, so of an accept, a cancel and
a withdrawal racing for the same rows exactly one decides each.

Services take a session and a principal, never commit, and audit every step.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal
from market.catalog.models import Dataset, DatasetVersion
from market.catalog.quality import WEIGHTS
from market.catalog.services import current_supply_chain
from market.catalog.taxonomy import MODALITIES, SECTORS
from market.core.db import utcnow
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.core.keyset import Keyset, asc, desc
from billing import certificates
from billing.context import BillingSettings
from billing.models import (
    Deal, DealQuote, DealStatus, Demand, DemandStatus, Entitlement, Order, OrderStatus, QuoteStatus,
)
from billing.orders import new_order, priced_line
from pricing.errors import PricingError
from pricing.money import Money, UnitPrice
from pricing.offers import CustomQuote, MilestoneKind
from pricing.rating import LineItem
from pricing.tax import TaxMode, apply_tax

# What a criterion may name: a dimension of the quality report, or its overall score.
DIMENSIONS = (*WEIGHTS, "overall")
MAX_TITLE = 200
MAX_TEXT = 5_000


# Input checks -----------------------------------------------------------------------------------

def _text(value: Any, field: str, *, required: bool = True, maximum: int = MAX_TEXT) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput("This must be text.", field=field)
    value = value.strip()
    if required and not value:
        raise InvalidInput("This field is required.", field=field)
    if len(value) > maximum:
        raise InvalidInput(f"At most {maximum:,} characters.", field=field)
    return value


def check_scores(scores: Any, field: str) -> dict[str, int]:
    """Minimum scores per quality dimension: known dimensions, whole numbers 0-100."""
    if scores is None:
        return {}
    if not isinstance(scores, Mapping):
        raise InvalidInput("Give minimum scores as an object: dimension -> score.", field=field)
    checked: dict[str, int] = {}
    for dimension, score in scores.items():
        where = f"{field}.{dimension}"
        if dimension not in DIMENSIONS:
            raise InvalidInput(f"Unknown quality dimension {dimension!r}; the dimensions are "
                               f"{', '.join(DIMENSIONS)}.", field=where)
        if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 100:
            raise InvalidInput("A minimum score is a whole number from 0 to 100.", field=where)
        checked[dimension] = score
    return checked


def _money(value: Any, field: str) -> Money:
    if isinstance(value, Money):
        return value
    try:
        return Money.from_dict(value)
    except PricingError as exc:
        raise InvalidInput(str(exc), field=f"{field}.{exc.field}") from None


def _quote_terms(code: str, milestones: Any, tax_rate: Any) -> CustomQuote:
    data = {"code": code, "milestones": milestones}
    if tax_rate is not None:
        data["tax_rate"] = tax_rate
    try:
        terms = CustomQuote.from_dict(data)
    except PricingError as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    if terms.milestones[-1].kind is not MilestoneKind.ACCEPTANCE:
        raise InvalidInput("The last milestone must be the acceptance payment: the buyer pays in "
                           "full only for a delivery it has accepted.", field="milestones")
    return terms


def gross_total(terms: CustomQuote) -> Money:
    """What the buyer pays over all milestones, tax included, rounded per milestone as the
    milestone orders are."""
    return Money.sum((apply_tax(m.amount, terms.tax_rate, TaxMode.EXCLUSIVE).gross
                      for m in terms.milestones), terms.currency)


def quote_terms(quote: DealQuote) -> CustomQuote:
    return CustomQuote.from_dict(quote.terms)


def over_budget(quote: DealQuote) -> bool:
    """Whether the quote asks more (tax included) than the demand's budget. Allowed, flagged."""
    return gross_total(quote_terms(quote)).minor > quote.demand.budget_minor


# Demands ----------------------------------------------------------------------------------------

def post_demand(session: Session, principal: Principal, values: Mapping[str, Any]) -> Demand:
    """A buyer's request for custom data, open for quotes until awarded or cancelled."""
    title = _text(values.get("title"), "title", maximum=MAX_TITLE)
    description = _text(values.get("description"), "description", required=False,
                        maximum=20_000)
    sector, modality = values.get("sector"), values.get("modality")
    if sector not in SECTORS:
        raise InvalidInput(f"Unknown sector code {sector!r}.", field="sector")
    if modality not in MODALITIES:
        raise InvalidInput(f"Unknown modality code {modality!r}.", field="modality")
    volume = _text(values.get("volume"), "volume", maximum=200)
    thresholds = check_scores(values.get("thresholds"), "thresholds")
    budget = _money(values.get("budget"), "budget")
    if not budget.is_positive():
        raise InvalidInput("The budget must be more than zero.", field="budget.amount")
    deadline = values.get("deadline")
    if not isinstance(deadline, dt.date) or isinstance(deadline, dt.datetime):
        raise InvalidInput("Give the deadline as a date.", field="deadline")
    if deadline <= utcnow().date():
        raise InvalidInput("The deadline must be in the future.", field="deadline")
    demand = Demand(organization_id=principal.organization_id, title=title,
                    description=description, sector=sector, modality=modality, volume=volume,
                    thresholds=thresholds, budget_minor=budget.minor, currency=budget.currency,
                    deadline=deadline, status=DemandStatus.OPEN, created_by_id=principal.user_id)
    session.add(demand)
    session.flush()  # the audit entry names the demand's id
    audit.record(session, "demand.posted", actor=principal.actor,
                 organization_id=principal.organization_id, object_type="demand",
                 object_id=demand.id, data={"title": title, "budget": str(budget),
                                            "thresholds": thresholds,
                                            "deadline": deadline.isoformat()})
    return demand


def list_own_demands(session: Session, principal: Principal) -> Keyset[Demand]:
    """The organization's demands, newest first."""
    return Keyset(session, select(Demand).where(
        Demand.organization_id == principal.organization_id), [desc(Demand.id)])


def list_open_demands(session: Session, principal: Principal, *, sector: str | None = None,
                      modality: str | None = None) -> Keyset[Demand]:
    """Demands suppliers may quote on: open, deadline not passed, not the caller's own."""
    query = select(Demand).where(Demand.status == DemandStatus.OPEN,
                                 Demand.deadline >= utcnow().date(),
                                 Demand.organization_id != principal.organization_id)
    if sector:
        query = query.where(Demand.sector == sector)
    if modality:
        query = query.where(Demand.modality == modality)
    return Keyset(session, query, [asc(Demand.deadline), asc(Demand.id)])


def _own_quote(demand: Demand, organization_id: int) -> DealQuote | None:
    return next((q for q in demand.quotes if q.organization_id == organization_id), None)


def _may_see(demand: Demand, principal: Principal) -> bool:
    org_id = principal.organization_id
    return (demand.organization_id == org_id
            or (demand.status == DemandStatus.OPEN and principal.can("deals:supply"))
            or _own_quote(demand, org_id) is not None)


def get_demand(session: Session, principal: Principal, demand_id: int, *,
               for_update: bool = False) -> Demand:
    """A demand the caller may see: its buyer always; any supplier while it is open; a
    supplier that quoted on it afterwards. Anyone else: 404."""
    query = select(Demand).where(Demand.id == demand_id)
    demand = session.scalar(query.with_for_update() if for_update else query)
    if demand is None or not _may_see(demand, principal):
        raise NotFound("No such demand.")
    return demand


def visible_quotes(demand: Demand, principal: Principal) -> list[DealQuote]:
    """The buyer sees every quote; a supplier only its own."""
    if demand.organization_id == principal.organization_id:
        return list(demand.quotes)
    return [q for q in demand.quotes if q.organization_id == principal.organization_id]


def _move(session: Session, row: Demand | DealQuote, expected: DemandStatus | QuoteStatus,
          new: DemandStatus | QuoteStatus, *, field: str, conflict: str) -> None:
    """Move a demand or quote from ``expected`` to ``new`` by a conditional update: of racing
    moves of the same row exactly one succeeds, and the others get 409 ``conflict``."""
    model = type(row)
    moved = session.execute(
        update(model).where(model.id == row.id, model.status == expected)
        .values(status=new).execution_options(synchronize_session=False)).rowcount
    if moved != 1:
        raise Conflict(conflict, field=field)
    session.refresh(row, ["status"])


def _decline_submitted(session: Session, demand: Demand, *, keep: int | None = None
                       ) -> list[int]:
    """Decline the demand's quotes still submitted (all but ``keep``); their ids.

    A conditional update, so a quote its supplier withdrew meanwhile stays withdrawn.
    """
    query = update(DealQuote).where(DealQuote.demand_id == demand.id,
                                    DealQuote.status == QuoteStatus.SUBMITTED)
    if keep is not None:
        query = query.where(DealQuote.id != keep)
    declined = sorted(session.scalars(
        query.values(status=QuoteStatus.DECLINED).returning(DealQuote.id),
        execution_options={"synchronize_session": False}))
    for quote in demand.quotes:
        session.expire(quote, ["status"])  # read afresh: declined here, or withdrawn meanwhile
    return declined


def cancel_demand(session: Session, principal: Principal, demand: Demand, *,
                  reason: str) -> Demand:
    """The buyer cancels its open demand, giving a reason; every quote still submitted is
    declined.

    Open → cancelled by a conditional update, as an accept moves it to awarded, so of a cancel
    and an accept at the same time exactly one succeeds; the other gets 409.
    """
    if demand.organization_id != principal.organization_id:
        if _may_see(demand, principal):
            raise Forbidden("Only the buyer that posted the demand cancels it.")
        raise NotFound("No such demand.")
    reason = _text(reason, "reason", maximum=2_000)
    if demand.status != DemandStatus.OPEN:
        raise Conflict(f"The demand is {demand.status}; only an open demand can be cancelled.",
                       field="demand")
    _move(session, demand, DemandStatus.OPEN, DemandStatus.CANCELLED, field="demand",
          conflict="A quote for this demand was accepted, or the demand cancelled, at the "
                   "same time.")
    declined = _decline_submitted(session, demand)
    audit.record(session, "demand.cancelled", actor=principal.actor,
                 organization_id=principal.organization_id, object_type="demand",
                 object_id=demand.id, data={"reason": reason, "declined": declined})
    return demand


# Quotes -----------------------------------------------------------------------------------------

def submit_quote(session: Session, principal: Principal, demand: Demand,
                 values: Mapping[str, Any]) -> DealQuote:
    """A supplier's quote: one per supplier per demand, on an open demand before its deadline.

    Milestones are a ``pricing.CustomQuote`` ending with the acceptance payment, in the demand's
    currency. Criteria default to the demand's thresholds and may be stricter, never looser.
    A quote above the budget is allowed and flagged (``over_budget``).
    """
    if demand.organization_id == principal.organization_id:
        raise Conflict("An organization cannot quote on its own demand.", field="demand")
    # Read under a share lock: an accept or a cancel that committed meanwhile is seen, and one
    # that starts meanwhile waits for this quote and so declines it too.
    status = session.scalar(select(Demand.status).where(Demand.id == demand.id)
                            .with_for_update(read=True))
    if status != DemandStatus.OPEN:
        raise Conflict(f"The demand is {status}; it takes no more quotes.", field="demand")
    if demand.deadline < utcnow().date():
        raise Conflict("The demand's deadline has passed.", field="demand")
    if _own_quote(demand, principal.organization_id) is not None:
        raise Conflict("Your organization has already quoted on this demand.", field="demand")
    dataset_id = values.get("dataset_id")
    dataset = session.get(Dataset, dataset_id) if isinstance(dataset_id, int) else None
    if dataset is None or dataset.organization_id != principal.organization_id:
        raise NotFound("No such dataset of your organization.", field="dataset_id")
    if current_supply_chain(session, dataset.id) is None:
        raise Conflict("Declare the dataset's supply chain first: the milestone payments are "
                       "shared along it.", field="dataset_id")
    terms = _quote_terms(f"demand-{demand.id}", values.get("milestones"),
                         values.get("tax_rate"))
    if terms.currency != demand.currency:
        raise InvalidInput(f"The demand is priced in {demand.currency}.",
                           field="milestones[0].amount.currency")
    criteria = check_scores(values.get("criteria"), "criteria")
    for dimension, minimum in demand.thresholds.items():
        criteria.setdefault(dimension, minimum)
        if criteria[dimension] < minimum:
            raise InvalidInput(f"The demand asks for at least {minimum} here.",
                               field=f"criteria.{dimension}")
    if not criteria:
        raise InvalidInput("Name at least one quality criterion the delivery must meet.",
                           field="criteria")
    quote = DealQuote(demand=demand, organization_id=principal.organization_id,
                      dataset_id=dataset.id, terms=terms.to_dict(), criteria=criteria,
                      note=_text(values.get("note"), "note", required=False),
                      status=QuoteStatus.SUBMITTED, created_by_id=principal.user_id)
    session.add(quote)
    try:
        with session.begin_nested():
            session.flush()  # the audit entry names the quote; a concurrent twin fails here
    except IntegrityError:
        raise Conflict("Your organization has already quoted on this demand.",
                       field="demand") from None
    total = gross_total(terms)
    audit.record(session, "quote.submitted", actor=principal.actor,
                 organization_id=principal.organization_id, object_type="deal_quote",
                 object_id=quote.id,
                 data={"demand_id": demand.id, "dataset_id": dataset.id,
                       "total": str(total), "over_budget": total.minor > demand.budget_minor,
                       "criteria": criteria})
    return quote


def get_quote_for_buyer(session: Session, principal: Principal, quote_id: int) -> DealQuote:
    quote = session.get(DealQuote, quote_id)
    if quote is None or quote.demand.organization_id != principal.organization_id:
        raise NotFound("No such quote.")
    return quote


def get_quote(session: Session, principal: Principal, quote_id: int) -> DealQuote:
    """A quote the caller may see: its supplier's and its demand's buyer's; anyone else: 404."""
    quote = session.get(DealQuote, quote_id)
    if quote is None or principal.organization_id not in (quote.organization_id,
                                                          quote.demand.organization_id):
        raise NotFound("No such quote.")
    return quote


def withdraw_quote(session: Session, principal: Principal, quote: DealQuote, *,
                   reason: str = "") -> DealQuote:
    """The supplier withdraws its quote while the buyer has not decided on it (the reason is
    optional).

    Submitted → withdrawn by a conditional update, so a withdrawal and the buyer's accept at
    the same time cannot both succeed. A withdrawn quote cannot be accepted, nor sent again.
    """
    if quote.organization_id != principal.organization_id:
        if quote.demand.organization_id == principal.organization_id:
            raise Forbidden("Only the supplier that sent the quote withdraws it.")
        raise NotFound("No such quote.")
    reason = _text(reason, "reason", required=False, maximum=2_000)
    if quote.status != QuoteStatus.SUBMITTED:
        raise Conflict(f"This quote was {quote.status}; only a quote awaiting the buyer's "
                       "decision can be withdrawn.", field="quote")
    demand = quote.demand
    if demand.status != DemandStatus.OPEN:
        raise Conflict(f"The demand is {demand.status}; its quotes can no longer be withdrawn.",
                       field="demand")
    _move(session, quote, QuoteStatus.SUBMITTED, QuoteStatus.WITHDRAWN, field="quote",
          conflict="The buyer decided on this quote at the same time.")
    audit.record(session, "quote.withdrawn", actor=principal.actor,
                 organization_id=principal.organization_id, object_type="deal_quote",
                 object_id=quote.id, data={"demand_id": demand.id, "reason": reason or None})
    return quote


def accept_quote(session: Session, principal: Principal, quote: DealQuote, *,
                 payment_method: str = "bank_transfer") -> Deal:
    """The buyer accepts one quote: a deal with one order per milestone; the rest declined.

    The demand moves from open to awarded by a conditional update, so of two accepts (or an
    accept and a cancel) at the same time exactly one wins; the other (and any later one) gets
    409. The quote moves from submitted to accepted the same way, so an accept racing its
    supplier's withdrawal gets 409 when the withdrawal came first.
    """
    demand = quote.demand
    if demand.organization_id != principal.organization_id:
        raise NotFound("No such quote.")
    if quote.status == QuoteStatus.ACCEPTED:
        raise Conflict("This quote has already been accepted.", field="quote")
    if quote.status != QuoteStatus.SUBMITTED:
        raise Conflict(f"This quote was {quote.status}; it cannot be accepted.", field="quote")
    if demand.status == DemandStatus.CANCELLED:
        raise Conflict("The demand is cancelled; none of its quotes can be accepted.",
                       field="demand")
    if demand.status != DemandStatus.OPEN:
        raise Conflict(f"The demand is {demand.status}; another quote cannot be accepted.",
                       field="demand")
    _move(session, demand, DemandStatus.OPEN, DemandStatus.AWARDED, field="demand",
          conflict="Another quote for this demand was accepted, or the demand cancelled, at "
                   "the same time.")
    # A refusal here rolls back the caller's transaction, and the award with it.
    _move(session, quote, QuoteStatus.SUBMITTED, QuoteStatus.ACCEPTED, field="quote",
          conflict="The supplier withdrew this quote at the same time.")
    declined = _decline_submitted(session, demand, keep=quote.id)
    deal = Deal(demand_id=demand.id, quote_id=quote.id, buyer_id=demand.organization_id,
                supplier_id=quote.organization_id, dataset_id=quote.dataset_id,
                status=DealStatus.IN_PROGRESS, acceptance={})
    session.add(deal)
    session.flush()  # the milestone orders refer to the deal
    terms = quote_terms(quote)
    dataset = session.get(Dataset, quote.dataset_id)
    for i, milestone in enumerate(terms.milestones):
        order = new_order(session, organization_id=demand.organization_id, kind="custom",
                          currency=terms.currency, payment_method=payment_method,
                          created_by_id=principal.user_id,
                          status=OrderStatus.AWAITING_PAYMENT if i == 0 else OrderStatus.SCHEDULED,
                          deal_id=deal.id, milestone=milestone.kind.value,
                          note=f"{demand.title} — {milestone.kind.value}")
        item = LineItem(code=f"custom:{milestone.kind.value}",
                        description=milestone.description or milestone.kind.value,
                        quantity=1, unit_price=UnitPrice.of(milestone.amount))
        priced_line(session, order, kind="custom_milestone",
                    description=f"{dataset.title_en} — {demand.title} "
                                f"({milestone.kind.value})",
                    items=[item], tax_rate=terms.tax_rate, dataset_id=quote.dataset_id,
                    terms={"quote": quote.terms, "milestone": milestone.to_dict(),
                           "deal_id": deal.id})
    session.flush()  # the audit entry names the orders
    audit.record(session, "quote.accepted", actor=principal.actor,
                 organization_id=principal.organization_id, object_type="deal",
                 object_id=deal.id,
                 data={"demand_id": demand.id, "quote_id": quote.id,
                       "declined": declined,
                       "orders": [o.number for o in milestone_orders(session, deal)]})
    return deal


# Deals ------------------------------------------------------------------------------------------

def milestone_orders(session: Session, deal: Deal) -> list[Order]:
    """The deal's orders in milestone order (deposit, delivery, acceptance)."""
    rank = {kind.value: i for i, kind in enumerate(MilestoneKind)}
    orders = session.scalars(select(Order).where(Order.deal_id == deal.id))
    return sorted(orders, key=lambda o: rank[o.milestone])


def _milestone(session: Session, deal: Deal, kind: MilestoneKind) -> Order | None:
    return next((o for o in milestone_orders(session, deal) if o.milestone == kind.value), None)


def get_deal(session: Session, principal: Principal, deal_id: int, *,
             for_update: bool = False) -> Deal:
    """A deal of which the caller is the buyer or the supplier; anyone else: 404."""
    query = select(Deal).where(Deal.id == deal_id)
    deal = session.scalar(query.with_for_update() if for_update else query)
    if deal is None or principal.organization_id not in (deal.buyer_id, deal.supplier_id):
        raise NotFound("No such deal.")
    return deal


def _make_payable(order: Order | None) -> None:
    if order is not None and order.status == OrderStatus.SCHEDULED:
        order.status = OrderStatus.AWAITING_PAYMENT
        order.payable_at = utcnow()


def acceptance_check(criteria: Mapping[str, int], quality: Mapping[str, Any]
                     ) -> dict[str, dict[str, Any]]:
    """Each criterion against the version's quality report: threshold, score, passed.

    A dimension the report did not assess (annotation accuracy without expert labels) has no
    score and fails: the criterion was agreed, and nothing shows it is met.
    """
    result = {}
    for dimension, threshold in sorted(criteria.items()):
        score = (quality.get(dimension) or {}).get("score")
        result[dimension] = {"threshold": threshold, "score": score,
                             "passed": score is not None and score >= threshold}
    return result


def failed_criteria(deal: Deal) -> list[str]:
    return [name for name, check in deal.acceptance.items() if not check["passed"]]


def deliver(session: Session, principal: Principal, deal: Deal, *, version_number: int
            ) -> Deal:
    """The supplier delivers a version of the quoted dataset; the acceptance check runs.

    Allowed once the deposit (if any) is paid, and again to replace a delivery the buyer has
    not accepted (after a failed check or a dispute). The version is frozen from now on.
    """
    if principal.organization_id != deal.supplier_id:
        if principal.organization_id == deal.buyer_id:
            raise Forbidden("Only the supplier delivers.")
        raise NotFound("No such deal.")
    if deal.status == DealStatus.ACCEPTED:
        raise Conflict("The delivery has been accepted; the deal is closed.", field="deal")
    deposit = _milestone(session, deal, MilestoneKind.DEPOSIT)
    if deposit is not None and deposit.status != OrderStatus.PAID:
        raise Conflict("The deposit is not paid yet; deliver once it is.", field="deal")
    version = session.scalar(select(DatasetVersion).where(
        DatasetVersion.dataset_id == deal.dataset_id, DatasetVersion.number == version_number))
    if version is None:
        raise InvalidInput("No such version of the quoted dataset.", field="version")
    now = utcnow()
    version.locked_at = version.locked_at or now
    deal.delivered_version_id = version.id
    deal.acceptance = acceptance_check(deal.quote.criteria, version.quality or {})
    deal.status = DealStatus.DELIVERED
    deal.delivered_at = now
    for order in milestone_orders(session, deal):
        if order.status == OrderStatus.SCHEDULED:
            # Not sold yet: the lines name what will be delivered (the certificate shows it).
            for line in order.lines:
                line.version_id = version.id
    _make_payable(_milestone(session, deal, MilestoneKind.DELIVERY))
    audit.record(session, "deal.delivered", actor=principal.actor,
                 organization_id=deal.supplier_id, object_type="deal", object_id=deal.id,
                 data={"version": version.number, "content_sha256": version.content_sha256,
                       "acceptance": deal.acceptance, "failed": failed_criteria(deal)})
    return deal


def _buyer_only(principal: Principal, deal: Deal, action: str) -> None:
    if principal.organization_id != deal.buyer_id:
        if principal.organization_id == deal.supplier_id:
            raise Forbidden(f"Only the buyer {action}.")
        raise NotFound("No such deal.")


def accept_delivery(session: Session, principal: Principal, deal: Deal, *,
                    waiver_reason: str | None = None) -> Deal:
    """The buyer accepts the delivery: the acceptance milestone becomes payable.

    When a criterion failed the buyer must either dispute or waive the failures explicitly,
    giving a reason; the reason is kept on each waived criterion and in the audit log.
    """
    _buyer_only(principal, deal, "accepts the delivery")
    if deal.status != DealStatus.DELIVERED:
        raise Conflict(f"The deal is {deal.status.replace('_', ' ')}; only a delivery awaiting "
                       "the buyer's decision can be accepted.", field="deal")
    failed = failed_criteria(deal)
    reason = _text(waiver_reason, "waiver_reason", required=False, maximum=2_000)
    if failed and not reason:
        raise Conflict(f"The delivery failed {', '.join(failed)}; dispute it, or waive the "
                       "failures with a reason.", field="waiver_reason")
    if failed:
        deal.acceptance = {name: {**check, "waived": reason} if name in failed else check
                           for name, check in deal.acceptance.items()}
    deal.status = DealStatus.ACCEPTED
    deal.decided_at = utcnow()
    _make_payable(_milestone(session, deal, MilestoneKind.ACCEPTANCE))
    audit.record(session, "deal.accepted", actor=principal.actor,
                 organization_id=deal.buyer_id, object_type="deal", object_id=deal.id,
                 data={"version_id": deal.delivered_version_id, "waived": failed,
                       "waiver_reason": reason or None})
    return deal


def dispute(session: Session, principal: Principal, deal: Deal, *, reason: str) -> Deal:
    """The buyer disputes the deal (a failed check, a late or missing delivery), with a reason.

    Unpaid milestones stay unpaid; the supplier may deliver again.
    """
    _buyer_only(principal, deal, "disputes the delivery")
    reason = _text(reason, "reason", maximum=2_000)
    if deal.status not in (DealStatus.IN_PROGRESS, DealStatus.DELIVERED):
        raise Conflict(f"The deal is {deal.status}; it cannot be disputed now.", field="deal")
    deal.status = DealStatus.DISPUTED
    deal.dispute_reason = reason
    deal.decided_at = utcnow()
    audit.record(session, "deal.disputed", actor=principal.actor,
                 organization_id=deal.buyer_id, object_type="deal", object_id=deal.id,
                 data={"reason": reason, "failed": failed_criteria(deal)})
    return deal


def on_milestone_paid(session: Session, order: Order, settings: BillingSettings) -> None:
    """Called when a milestone order is paid (``billing.fulfilment``); the final milestone grants
    the buyer a perpetual download of the delivered version and a transaction certificate."""
    deal = session.get(Deal, order.deal_id)
    orders = milestone_orders(session, deal)
    final = orders[-1].id == order.id
    audit.record(session, "deal.milestone_paid", organization_id=deal.buyer_id,
                 object_type="deal", object_id=deal.id,
                 data={"order": order.number, "milestone": order.milestone,
                       "amount": str(order.total), "final": final})
    if not final:
        return
    if deal.delivered_version_id is None:  # cannot happen: the final milestone is acceptance
        raise Conflict("Nothing has been delivered yet.", field="deal")
    line = order.lines[0]
    session.add(Entitlement(organization_id=order.organization_id, dataset_id=deal.dataset_id,
                            version_id=deal.delivered_version_id, kind="download",
                            order_line_id=line.id, valid_from=utcnow(), valid_until=None))
    session.flush()  # the certificate and the audit entry follow the granted rows
    certificate = certificates.issue(session, order, line, settings.certificate_key)
    audit.record(session, "deal.completed", organization_id=deal.buyer_id,
                 object_type="deal", object_id=deal.id,
                 data={"version_id": deal.delivered_version_id,
                       "certificate": certificate.number})


def deal_summary(session: Session, deal: Deal) -> dict[str, Any]:
    """What the API shows of a deal: its milestones with their orders, and the check."""
    version = (session.get(DatasetVersion, deal.delivered_version_id)
               if deal.delivered_version_id else None)
    return {"deal": deal, "version": version, "orders": milestone_orders(session, deal),
            "failed": failed_criteria(deal)}
