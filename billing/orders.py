"""Orders: pricing a purchase into lines that snapshot terms, tax and the supply chain.

Every way of buying ends here: the mall's cart (``place_mall_order``), token packs
(``place_token_pack_order``), and the orders that subscriptions, custom deals and postpaid usage
build with ``new_order`` and ``priced_line``. An order is priced once, when it is placed; the
lines keep the offer's terms, the tax and the supply-chain revision in force at that moment, so
a later price or share change never rewrites what was sold. Paying is ``billing.payments``.

Tax comes from the record, never from the request: whether the buyer is charged VAT is the tax
status platform finance verified on its organization (``buyer_tax_status``), read here for every
line of every kind of order.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.core import audit
from market.core.audit import SYSTEM, Actor
from market.accounts.authz import Principal
from market.catalog.models import Dataset, ListingStatus, Offer, SupplyChainShare
from market.catalog.offers import metered_offer
from market.catalog.services import current_supply_chain
from market.core.db import utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from market.core.keyset import Keyset, desc
from market.accounts.models import Organization  # the buyer's verified tax status
from billing.budgets import lines as budgets
from billing.models import LIVE_PAYMENT_STATUSES, InvoiceStatus, Order, OrderLine, OrderStatus
from pricing.errors import PricingError
from pricing.money import Money, UnitPrice
from pricing.offers import MallPackage, MeteredRateCard, offer_from_dict
from pricing.quotes import Quote, quote
from pricing.rating import LineItem
from pricing.tax import (BuyerTaxStatus, TaxMode, TaxpayerStatus, apply_tax, offer_tax_rate,
                         parse_tax_rate)

PAYMENT_METHODS = ("card", "bank_transfer")
TOKENS_PER_MILLION = 1_000_000
# Largest order a cart may hold, so a typo in a quantity cannot create an absurd invoice.
MAX_QUANTITY = 1_000
MAX_TOKEN_PACK_MILLIONS = 100_000


@dataclass(frozen=True)
class CartItem:
    offer_id: int
    quantity: int = 1


# Characters of numbers people read aloud or type from paper: no 0/O, no 1/I.
READABLE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def order_number(prefix: str = "DM") -> str:
    """A unique, unguessable order number such as ``DM-20261123-7QK2M9XD``."""
    token = "".join(secrets.choice(READABLE_ALPHABET) for _ in range(8))
    return f"{prefix}-{utcnow():%Y%m%d}-{token}"


def order_parties(session: Session, order: Order) -> frozenset[int]:
    """The organizations with a stake in an order: its buyer, the sellers of its datasets and
    every participant of the supply chains its lines snapshot (the exchange's share included).

    The platform is the marketplace's operator, not a party: its fee on every order is checked
    by maker-checker instead (``billing.context.BillingSettings.needs_second_approver``).
    """
    parties = {order.organization_id}
    dataset_ids = {line.dataset_id for line in order.lines if line.dataset_id}
    revision_ids = {line.supply_chain_revision_id for line in order.lines
                    if line.supply_chain_revision_id}
    if dataset_ids:
        parties.update(session.scalars(select(Dataset.organization_id).where(
            Dataset.id.in_(dataset_ids))))
    if revision_ids:
        parties.update(session.scalars(select(SupplyChainShare.organization_id).where(
            SupplyChainShare.revision_id.in_(revision_ids))))
    unsnapshotted = {line.dataset_id for line in order.lines
                     if line.dataset_id and not line.supply_chain_revision_id}
    for dataset_id in unsnapshotted:  # lines sold without a snapshot: the chain in force
        revision = current_supply_chain(session, dataset_id)
        if revision is not None:
            parties.update(share.organization_id for share in revision.shares)
    return frozenset(parties)


def new_order(session: Session, *, organization_id: int, kind: str, currency: str,
              payment_method: str, created_by_id: int | None = None,
              billing_key: str | None = None,
              status: OrderStatus = OrderStatus.AWAITING_PAYMENT,
              **fields: Any) -> Order:
    if payment_method not in PAYMENT_METHODS:
        raise InvalidInput(f"Pay by {' or '.join(PAYMENT_METHODS)}.", field="payment_method")
    order = Order(number=order_number(), organization_id=organization_id, kind=kind,
                  status=status, currency=currency, subtotal_minor=0, tax_minor=0,
                  total_minor=0, paid_minor=0, refunded_minor=0, payment_method=payment_method,
                  created_by_id=created_by_id, billing_key=billing_key,
                  payable_at=utcnow() if status == OrderStatus.AWAITING_PAYMENT else None,
                  **fields)
    session.add(order)
    return order


def buyer_tax_status(session: Session, organization_id: int) -> BuyerTaxStatus:
    """Whether an organization's purchases are taxed, from its verified tax status."""
    status = session.scalar(select(Organization.tax_status)
                            .where(Organization.id == organization_id))
    if status is None:
        raise NotFound("No such organization.", field="organization_id")
    return TaxpayerStatus(status).buyer_tax_status


def chain_snapshot(session: Session, dataset_id: int) -> tuple[int | None, list[list[Any]]]:
    """The supply-chain revision in force for a dataset, as (id, [[participant, bps], ...])."""
    chain = current_supply_chain(session, dataset_id)
    if chain is None:
        raise Conflict("The dataset has no supply chain declared, so it cannot be sold.",
                       field="dataset")
    return chain.id, [list(pair) for pair in chain.shares_bps()]


def priced_line(session: Session, order: Order, *, kind: str, description: str,
                items: Sequence[LineItem], tax_rate, buyer: str | None = None,
                offer: Offer | None = None, dataset_id: int | None = None,
                version_id: int | None = None, quantity: int = 1, tokens: int = 0,
                terms: dict[str, Any] | None = None, chain: bool = True,
                taxed: tuple[Money, Money] | None = None) -> OrderLine:
    """Add one line priced from ``pricing`` line items, tax rounded once on the line.

    ``taxed``: the (net, tax) a ``pricing`` quote already worked out, so the order charges
    exactly what the buyer was quoted. ``chain``: snapshot the dataset's supply chain (a
    platform-wide line has none). ``buyer``: the tax status the quote was priced for; by
    default the order's organization's own.
    """
    if any(item.currency != order.currency for item in items):
        raise InvalidInput("An order is paid in one currency.", field="currency")
    rate = parse_tax_rate(tax_rate)
    if taxed is None:
        status = (BuyerTaxStatus(buyer) if buyer is not None
                  else buyer_tax_status(session, order.organization_id))
        net = Money.sum((item.amount for item in items), order.currency)
        computed = apply_tax(net, rate, TaxMode.EXCLUSIVE, status)
        taxed = (computed.net, computed.tax)
    net, tax = taxed
    revision_id, shares = (chain_snapshot(session, dataset_id)
                           if chain and dataset_id is not None else (None, []))
    line = OrderLine(
        position=len(order.lines) + 1, kind=kind, description=description[:300],
        offer_id=offer.id if offer is not None else None, dataset_id=dataset_id,
        version_id=version_id, quantity=quantity, tokens=tokens,
        subtotal_minor=net.minor, tax_minor=tax.minor, total_minor=net.minor + tax.minor,
        tax_rate=format(rate, "f"),
        terms={**(terms or {}), "items": [item.to_dict() for item in items]},
        supply_chain_revision_id=revision_id, shares=shares)
    order.lines.append(line)
    order.subtotal_minor += line.subtotal_minor
    order.tax_minor += line.tax_minor
    order.total_minor += line.total_minor
    return line


def _quoted_line(session: Session, order: Order, offer: Offer, priced: Quote, *, kind: str,
                 quantity: int, tokens: int, version_id: int | None,
                 description: str) -> OrderLine:
    items = [line.item for line in priced.lines]
    return priced_line(session, order, kind=kind, description=description, items=items,
                       tax_rate=offer_tax_rate(offer.terms),
                       buyer=priced.buyer_tax_status.value, offer=offer,
                       dataset_id=offer.dataset_id, version_id=version_id, quantity=quantity,
                       tokens=tokens, terms={"offer": offer.terms},
                       taxed=(priced.subtotal, priced.tax))


def sellable_offer(session: Session, principal: Principal, offer_id: int, *,
                   kinds: Sequence[str], field: str) -> Offer:
    """An offer the principal may buy now: active, of a listed dataset, not its own."""
    offer = session.get(Offer, offer_id)
    if offer is None:
        raise NotFound("No such offer.", field=field)
    dataset: Dataset = offer.dataset
    listing = dataset.listing
    if listing is None or listing.status != ListingStatus.APPROVED.value:
        # Only listed datasets are visible to buyers; anything else does not exist for them.
        if dataset.organization_id != principal.organization_id:
            raise NotFound("No such offer.", field=field)
        raise Conflict("The dataset is not listed; it cannot be bought.", field=field)
    if offer.retired_at is not None:
        raise Conflict("This offer has been withdrawn; it cannot be bought.", field=field)
    if offer.kind not in kinds:
        raise InvalidInput(f"This offer is a {offer.kind} offer; here only "
                           f"{', '.join(kinds)} can be bought.", field=field)
    if dataset.organization_id == principal.organization_id:
        raise Conflict("An organization cannot buy its own dataset.", field=field)
    return offer


def _check_quantity(quantity: Any, field: str, maximum: int) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise InvalidInput("The quantity must be a whole number of at least 1.", field=field)
    if quantity > maximum:
        raise InvalidInput(f"At most {maximum:,} at once.", field=field)
    return quantity


def place_mall_order(session: Session, principal: Principal, items: Sequence[CartItem], *,
                     payment_method: str, note: str = "", budget_line_id: int | None = None,
                     purchase_order_number: str | None = None) -> Order:
    """Check out a cart of mall packages: one order, one line per package, priced now.

    The order's total is committed on the budget line it is charged to
    (``billing.budgets.lines.commit_order``); its warnings are on ``order.budget_warnings``.
    """
    if not items:
        raise InvalidInput("The cart is empty.", field="items")
    taxed_as = buyer_tax_status(session, principal.organization_id)
    seen: set[int] = set()
    order: Order | None = None
    for i, item in enumerate(items):
        field = f"items.{i}"
        quantity = _check_quantity(item.quantity, f"{field}.quantity", MAX_QUANTITY)
        if item.offer_id in seen:
            raise InvalidInput("The same package is in the cart twice; change its quantity.",
                               field=f"{field}.offer_id")
        seen.add(item.offer_id)
        offer = sellable_offer(session, principal, item.offer_id, kinds=("mall_package",),
                               field=f"{field}.offer_id")
        package = offer_from_dict(offer.terms)
        assert isinstance(package, MallPackage)
        if order is None:
            order = new_order(session, organization_id=principal.organization_id, kind="mall",
                              currency=package.currency, payment_method=payment_method,
                              created_by_id=principal.user_id, note=note)
        elif package.currency != order.currency:
            raise InvalidInput("Every package in one order must be priced in the same "
                               "currency.", field=f"{field}.offer_id")
        try:
            priced = quote(package, quantity=quantity, buyer=taxed_as)
        except PricingError as exc:
            raise InvalidInput(str(exc), field=f"{field}.{exc.field}") from None
        dataset = offer.dataset
        _quoted_line(session, order, offer, priced, kind="mall_package", quantity=quantity,
                     tokens=package.api_tokens * quantity,
                     version_id=dataset.listing.version_id,
                     description=f"{dataset.title_en} — {package.code} × {quantity}")
    assert order is not None
    session.flush()  # the audit entry and the response name the order's id
    order.budget_warnings = budgets.commit_order(
        session, principal, order, budget_line_id=budget_line_id,
        purchase_order_number=purchase_order_number)
    audit.record(session, "order.placed", actor=principal.actor,
                 organization_id=order.organization_id, object_type="order", object_id=order.id,
                 data={"number": order.number, "total": str(order.total),
                       "lines": [line.offer_id for line in order.lines]})
    return order


def place_token_pack_order(session: Session, principal: Principal, *, millions: int,
                           payment_method: str, dataset_id: int | None = None,
                           platform_price_per_million: Money | None = None,
                           budget_line_id: int | None = None,
                           purchase_order_number: str | None = None) -> Order:
    """Buy N million prepaid tokens for one dataset (priced by its metered rate card) or for
    the whole platform (priced by the platform's token-pack price).

    A dataset's pack is split across its supply chain when paid; a platform-wide pack is held as
    the buyer's prepaid credit and shared out as its tokens are used.
    """
    millions = _check_quantity(millions, "millions", MAX_TOKEN_PACK_MILLIONS)
    tokens = millions * TOKENS_PER_MILLION
    taxed_as = buyer_tax_status(session, principal.organization_id)
    if dataset_id is None:
        if platform_price_per_million is None:
            raise Conflict("Platform-wide token packs are not on sale.", field="dataset_id")
        order = new_order(session, organization_id=principal.organization_id,
                          kind="token_pack", currency=platform_price_per_million.currency,
                          payment_method=payment_method, created_by_id=principal.user_id)
        item = LineItem(code="token_pack", description=f"{millions}M platform tokens",
                        quantity=millions, unit_price=UnitPrice.of(platform_price_per_million))
        priced_line(session, order, kind="token_pack", items=[item],
                    tax_rate=offer_tax_rate(None), buyer=taxed_as.value,
                    description=f"{millions}M tokens, any dataset", quantity=millions,
                    tokens=tokens, terms={"scope": "platform"}, chain=False)
    else:
        dataset = session.get(Dataset, dataset_id)
        metered = metered_offer(dataset) if dataset else None
        if metered is None:
            raise NotFound("This dataset sells no API tokens.", field="dataset_id")
        offer = sellable_offer(session, principal, metered.id, kinds=("metered",),
                               field="dataset_id")
        card = offer_from_dict(offer.terms)
        assert isinstance(card, MeteredRateCard)
        order = new_order(session, organization_id=principal.organization_id,
                          kind="token_pack", currency=card.currency,
                          payment_method=payment_method, created_by_id=principal.user_id)
        priced = quote(card, tokens=tokens, buyer=taxed_as)
        _quoted_line(session, order, offer, priced, kind="token_pack", quantity=millions,
                     tokens=tokens, version_id=None,
                     description=f"{millions}M tokens of {offer.dataset.title_en}")
        order.lines[-1].terms["scope"] = f"dataset:{dataset_id}"
    if order.total_minor <= 0:
        raise InvalidInput("These tokens cost nothing; there is nothing to buy.",
                           field="millions")
    session.flush()  # the audit entry names the order's id
    order.budget_warnings = budgets.commit_order(
        session, principal, order, budget_line_id=budget_line_id,
        purchase_order_number=purchase_order_number)
    audit.record(session, "order.placed", actor=principal.actor,
                 organization_id=order.organization_id, object_type="order", object_id=order.id,
                 data={"number": order.number, "total": str(order.total), "tokens": tokens})
    return order


def get_order(session: Session, principal: Principal, order_id: int, *,
              for_update: bool = False) -> Order:
    """The principal's own order (another organization's answers 404)."""
    query = select(Order).where(Order.id == order_id)
    if for_update:
        query = query.with_for_update()
    order = session.scalar(query)
    if order is None or order.organization_id != principal.organization_id:
        raise NotFound("No such order.")
    return order


def list_orders(session: Session, principal: Principal) -> Keyset[Order]:
    """The organization's orders, newest first (a renewal not yet due is not one yet)."""
    return Keyset(session, select(Order).where(
        Order.organization_id == principal.organization_id, Order.status != OrderStatus.SCHEDULED),
        [desc(Order.id)])


def cancel_order(session: Session, principal: Principal, order: Order) -> Order:
    """Cancel an unpaid order; one with a payment in flight or paid cannot be."""

    if order.status != OrderStatus.AWAITING_PAYMENT:
        raise Conflict(f"The order is {order.status.replace('_', ' ')}; only an unpaid order "
                       "can be cancelled.", field="status")
    if any(p.status in LIVE_PAYMENT_STATUSES for p in order.payments):
        raise Conflict("A payment for this order is in progress.", field="status")
    return cancel_unpaid(session, order, actor=principal.actor)


def cancel_unpaid(session: Session, order: Order, *, actor: Actor = SYSTEM,
                  reason: str | None = None) -> Order:
    """Cancel an order nobody paid: its invoice void, what it held on a budget line released,
    and an audit entry (with ``reason`` when a job cancels it). The caller has checked that no
    payment of it may still succeed."""
    order.status = OrderStatus.CANCELLED
    order.cancelled_at = utcnow()
    if order.invoice is not None:
        order.invoice.status = InvoiceStatus.VOID
    budgets.on_order_cancelled(session, order)
    data = {"number": order.number} if reason is None else {"number": order.number, "reason": reason}
    audit.record(session, "order.cancelled", actor=actor, organization_id=order.organization_id,
                 object_type="order", object_id=order.id, data=data)
    return order


def today() -> dt.date:
    return utcnow().date()
