"""Offers: the prices a supplier sets for a dataset under each commercial model.

The terms are validated and normalized by ``pricing`` (``offer_from_dict``), stored as its
``to_dict()`` form, and never edited; adding and retiring offers is audited.
"""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal
from market.catalog.models import Dataset, Offer
from market.core.db import utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from pricing.errors import PricingError
from pricing.money import Money
from pricing.offers import CustomQuote, MallPackage, SubscriptionPlan, offer_from_dict


def headline_price(terms) -> Money:
    """The price a buyer compares first: per period, per package, the quote's total, or the
    first tier's price per million tokens (rounded to the minor unit)."""
    if isinstance(terms, (SubscriptionPlan, MallPackage)):
        return terms.price
    if isinstance(terms, CustomQuote):
        return terms.total
    first = terms.tiers[0].price_per_million
    return Money.rounded(first.amount, first.currency)


def metered_offer(dataset: Dataset, kind: str = "metered") -> Offer | None:
    """The offer a dataset's API use is priced and taxed by: its first active offer of
    ``kind`` (``metered`` for calls served, ``royalty`` for use the buyer reports), or None.

    A retired offer prices nothing new, not even a later invoice for use charged while it
    was active: that use was charged already, and the invoice takes the rate card in force.
    """
    return next((o for o in dataset.active_offers if o.kind == kind), None)


def add_offer(session: Session, principal: Principal, dataset: Dataset,
              terms: Mapping[str, Any]) -> Offer:
    """Add an offer; bad terms are named by their field under ``terms``."""
    try:
        offer_terms = offer_from_dict(terms)
    except PricingError as exc:
        raise InvalidInput(str(exc), field=f"terms.{exc.field}") from None
    if any(o.code == offer_terms.code for o in dataset.active_offers):
        raise Conflict(f"An active offer already has the code {offer_terms.code!r}.",
                       field="terms.code")
    headline = headline_price(offer_terms)
    offer = Offer(dataset=dataset, kind=offer_terms.KIND, code=offer_terms.code,
                  currency=offer_terms.currency, headline_minor=headline.minor,
                  terms=offer_terms.to_dict(), created_by_id=principal.user_id)
    session.add(offer)
    session.flush()  # the audit entry names the offer's id
    audit.record(session, "offer.added", actor=principal.actor,
                 organization_id=dataset.organization_id, object_type="offer",
                 object_id=offer.id, data={"dataset_id": dataset.id, "terms": offer.terms})
    return offer


def retire_offer(session: Session, principal: Principal, offer: Offer) -> Offer:
    """Stop selling under an offer; what was sold under it keeps its terms."""
    if offer.retired_at is None:
        offer.retired_at = utcnow()
        audit.record(session, "offer.retired", actor=principal.actor,
                     organization_id=offer.dataset.organization_id, object_type="offer",
                     object_id=offer.id, data={"dataset_id": offer.dataset_id,
                                               "code": offer.code})
    return offer


def get_offer(session: Session, dataset: Dataset, offer_id: int) -> Offer:
    offer = session.get(Offer, offer_id)
    if offer is None or offer.dataset_id != dataset.id:
        raise NotFound("No such offer.")
    return offer
