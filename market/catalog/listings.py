"""Listing review: the supplier submits a version; the exchange approves or rejects it with
reasons; approved listings can be suspended, reinstated and delisted. Every step is audited.

    draft ─submit→ submitted ─approve→ approved ─suspend→ suspended ─reinstate→ approved
      rejected ←reject─┘  ↑                 └──────delist──→ delisted ←──delist──┘
      └──────resubmit─────┘ (and delisted ─submit→ submitted)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal, refuse_party
from market.accounts.models import Organization
from market.catalog.models import (
    Dataset, DatasetVersion, Listing, ListingEvent, ListingStatus,
)
from market.catalog.services import current_supply_chain
from market.catalog.taxonomy import RIGHTS
from market.core.db import utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from market.core.keyset import Keyset, asc

REASON_CODES = {
    "rights_unproven": ("权属证明不足", "Rights unproven"),
    "personal_information_risk": ("个人信息风险", "Personal-information risk"),
    "quality_below_threshold": ("质量未达标", "Quality below threshold"),
    "price_missing": ("未定价", "Price missing"),
    "shares_invalid": ("分成比例无效", "Revenue shares invalid"),
    "other": ("其他", "Other"),
}

S = ListingStatus
_SUBMITTABLE = {S.DRAFT.value, S.REJECTED.value, S.DELISTED.value}


@dataclass(frozen=True)
class ChecklistItem:
    code: str
    passed: bool
    detail: str


def checklist(session: Session, dataset: Dataset, version: DatasetVersion) -> list[ChecklistItem]:
    """The automatic checks a reviewer sees beside each submission."""
    chain = current_supply_chain(session, dataset.id)
    missing_rights = [r for r in RIGHTS if not dataset.rights.get(r)]
    items = [
        ChecklistItem("rights_declared", not missing_rights,
                      "all three rights have a holder" if not missing_rights
                      else f"no holder for: {', '.join(missing_rights)}"),
        ChecklistItem("shares_valid",
                      chain is not None and sum(s.share_bps for s in chain.shares) == 10_000,
                      f"supply chain revision {chain.revision}" if chain else
                      "no supply chain declared"),
        ChecklistItem("quality_report_present", bool(version.quality),
                      f"grade {version.quality_grade} ({version.quality_score}/100)"),
        ChecklistItem("samples_present", bool(version.samples),
                      f"{len(version.samples)} sample records"),
        ChecklistItem("offer_present", bool(dataset.active_offers),
                      ", ".join(sorted({o.kind for o in dataset.active_offers}))
                      or "no active offer"),
    ]
    return items


def _checklist_json(items: Sequence[ChecklistItem]) -> dict[str, Any]:
    return {i.code: {"passed": i.passed, "detail": i.detail} for i in items}


def _event(session: Session, principal: Principal, listing: Listing, action: str, *,
           reasons: Sequence[str] = (), text: str = "", checks: dict | None = None) -> None:
    listing.events.append(ListingEvent(
        action=action, status_after=listing.status, version_id=listing.version_id,
        actor_user_id=principal.user_id, reason_codes=list(reasons), text=text,
        checklist=checks or {}))
    audit.record(session, f"listing.{action}", actor=principal.actor,
                 organization_id=listing.dataset.organization_id, object_type="listing",
                 object_id=listing.id, data={"status": listing.status,
                                             "version_id": listing.version_id,
                                             "exchange_id": listing.exchange_id,
                                             "reasons": list(reasons), "text": text})


def submit(session: Session, principal: Principal, dataset: Dataset, *, version_id: int,
           exchange_id: int, review_days: int) -> Listing:
    """Send a version to an exchange for review; the version is frozen from now on."""
    version = session.get(DatasetVersion, version_id)
    if version is None or version.dataset_id != dataset.id:
        raise InvalidInput("No such version of this dataset.", field="version_id")
    exchange = session.get(Organization, exchange_id)
    if exchange is None or not exchange.has_role_name("exchange"):
        raise InvalidInput("Choose an exchange to review the listing.", field="exchange_id")
    listing = dataset.listing
    if listing is not None and listing.status not in _SUBMITTABLE:
        raise Conflict(f"The listing is already {listing.status}.", field="listing")
    now = utcnow()
    if listing is None:
        listing = Listing(dataset=dataset, status=S.DRAFT.value, version_id=version.id,
                          exchange_id=exchange.id)
        session.add(listing)
    action = "resubmitted" if listing.status == S.REJECTED.value else "submitted"
    listing.version_id, listing.exchange_id = version.id, exchange.id
    listing.status = S.SUBMITTED.value
    listing.submitted_at, listing.decided_at = now, None
    listing.due_at = now + dt.timedelta(days=review_days)
    version.locked_at = version.locked_at or now
    session.flush()  # a new listing needs its id for its first event and audit entry
    _event(session, principal, listing, action,
           checks=_checklist_json(checklist(session, dataset, version)))
    return listing


# A verdict on a version's data: approval (or reinstatement) passes it, suspension withdraws it.
# Delisting only ends sales, so a delisted version keeps its review.
_PASSES = {"approved": True, "reinstated": True, "suspended": False}


def reviewed_version_ids(session: Session, dataset_id: int) -> set[int]:
    """The versions of a dataset that passed an exchange's review (and were not suspended since).

    Only these are served, sold or shown (samples, schema, quality report) to anyone but the
    supplier and the exchange reviewing it; an unsubmitted or rejected version never is.
    """
    reviewed: set[int] = set()
    for action, version_id in session.execute(
            select(ListingEvent.action, ListingEvent.version_id).join(Listing)
            .where(Listing.dataset_id == dataset_id, ListingEvent.action.in_(_PASSES))
            .order_by(ListingEvent.id)):
        if _PASSES[action]:
            reviewed.add(version_id)
        else:
            reviewed.discard(version_id)
    return reviewed


def sees_contents(principal: Principal | None, version: DatasetVersion,
                  reviewed: set[int]) -> bool:
    """Whether the principal may read a version's samples, schema and quality report: its
    supplier always, the exchange its listing is with once it was submitted (it reviews it),
    anybody else only when it passed review (``reviewed``)."""
    if version.id in reviewed:
        return True
    if principal is None:
        return False
    dataset = version.dataset
    if principal.organization_id == dataset.organization_id:
        return True
    listing = dataset.listing
    return (listing is not None and listing.exchange_id == principal.organization_id
            and version.locked_at is not None)  # locked when it was submitted


def visible_versions(session: Session, principal: Principal | None,
                     dataset: Dataset) -> Keyset[DatasetVersion]:
    """The dataset's versions whose contents the principal may read (see ``sees_contents``),
    by number."""
    reviewed = reviewed_version_ids(session, dataset.id)
    return Keyset(session, select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id),
                  [asc(DatasetVersion.number), asc(DatasetVersion.id)],
                  keep=lambda version: sees_contents(principal, version, reviewed))


def get_visible_version(session: Session, principal: Principal | None, dataset: Dataset,
                        number: int) -> DatasetVersion:
    """One version of a dataset the principal can see; 404 for a version it may not read,
    so an unreviewed draft is not even confirmed to exist."""
    version = session.scalar(select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset.id, DatasetVersion.number == number))
    if version is None or not sees_contents(principal, version,
                                            reviewed_version_ids(session, dataset.id)):
        raise NotFound("No such version.")
    return version


def get_for_reviewer(session: Session, principal: Principal, listing_id: int) -> Listing:
    """A listing sent to the principal's exchange (404 for any other)."""
    listing = session.get(Listing, listing_id)
    if listing is None or listing.exchange_id != principal.organization_id or \
            listing.status == S.DRAFT.value:
        raise NotFound("No such listing.")
    return listing


def get_for_party(session: Session, principal: Principal, listing_id: int) -> Listing:
    """A listing seen by its supplier or by its exchange."""
    listing = session.get(Listing, listing_id)
    if listing is None or principal.organization_id not in (
            listing.dataset.organization_id, listing.exchange_id):
        raise NotFound("No such listing.")
    return listing


def review_queue(session: Session, principal: Principal) -> Keyset[Listing]:
    """Submissions waiting for the principal's exchange, the most urgent first."""
    return Keyset(session, select(Listing).where(Listing.exchange_id == principal.organization_id,
                                                 Listing.status == S.SUBMITTED.value),
                  [asc(Listing.due_at), asc(Listing.id)])


def _move(listing: Listing, allowed_from: set[str], to: ListingStatus, verb: str) -> None:
    if listing.status not in allowed_from:
        raise Conflict(f"A {listing.status} listing cannot be {verb}.", field="status")
    listing.status = to.value


def review_parties(session: Session, listing: Listing) -> set[int]:
    """Who may not review a listing: the dataset's supplier and the participants of its supply
    chain, but for the fee an exchange takes as the exchange (its review is what it is paid
    for)."""
    parties = {listing.dataset.organization_id}
    revision = current_supply_chain(session, listing.dataset_id)
    if revision is not None:
        parties.update(share.organization_id for share in revision.shares
                       if share.role != "exchange")
    return parties


def _refuse_own(session: Session, principal: Principal, listing: Listing) -> None:
    refuse_party(principal, review_parties(session, listing), item="listing", action="review")


def approve(session: Session, principal: Principal, listing: Listing, *, note: str = "") -> Listing:
    _refuse_own(session, principal, listing)
    _move(listing, {S.SUBMITTED.value}, S.APPROVED, "approved")
    listing.decided_at = listing.listed_at = utcnow()
    _event(session, principal, listing, "approved", text=note)
    return listing


def reject(session: Session, principal: Principal, listing: Listing, *,
           reasons: Sequence[str], text: str) -> Listing:
    """Send a submission back with reason codes; "other" needs an explanation."""
    unknown = [r for r in reasons if r not in REASON_CODES]
    if not reasons or unknown:
        raise InvalidInput(f"Give reason codes from: {', '.join(REASON_CODES)}.",
                           field="reasons")
    if not text.strip():
        raise InvalidInput("Tell the supplier what to correct.", field="text")
    _refuse_own(session, principal, listing)
    _move(listing, {S.SUBMITTED.value}, S.REJECTED, "rejected")
    listing.decided_at = utcnow()
    _event(session, principal, listing, "rejected", reasons=reasons, text=text)
    return listing


def suspend(session: Session, principal: Principal, listing: Listing, *, text: str) -> Listing:
    if not text.strip():
        raise InvalidInput("Say why the listing is suspended.", field="text")
    _refuse_own(session, principal, listing)
    _move(listing, {S.APPROVED.value}, S.SUSPENDED, "suspended")
    _event(session, principal, listing, "suspended", text=text)
    return listing


def reinstate(session: Session, principal: Principal, listing: Listing, *, text: str = "") -> Listing:
    _refuse_own(session, principal, listing)
    _move(listing, {S.SUSPENDED.value}, S.APPROVED, "reinstated")
    _event(session, principal, listing, "reinstated", text=text)
    return listing


def delist(session: Session, principal: Principal, listing: Listing, *, text: str = "") -> Listing:
    """End sales; the supplier or the exchange may do it."""
    _move(listing, {S.APPROVED.value, S.SUSPENDED.value}, S.DELISTED, "delisted")
    _event(session, principal, listing, "delisted", text=text)
    return listing
