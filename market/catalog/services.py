"""Datasets and their supply chains: create, edit, see, and revise who shares in the revenue.

Services take a session and a principal, never commit, and audit what they change.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal, get_owned
from market.accounts.models import Organization
from market.catalog import search
from market.catalog.models import (
    Dataset, ListingStatus, SupplyChainRevision, SupplyChainShare,
)
from market.catalog.taxonomy import (
    AI_STAGES, CHAIN_ROLES, LANGUAGES, LICENCES, MODALITIES, PERSONAL_INFORMATION, RIGHTS,
    SECTORS, SENSITIVITY,
)
from market.core.errors import Conflict, InvalidInput, NotFound
from pricing.allocation import validate_shares
from pricing.errors import PricingError

_CODED_FIELDS = {
    "sector": SECTORS, "modality": MODALITIES, "ai_stage": AI_STAGES, "licence": LICENCES,
    "personal_information": PERSONAL_INFORMATION, "sensitivity": SENSITIVITY,
}
EDITABLE_FIELDS = (
    "title_zh", "title_en", "summary_zh", "summary_en", "description_zh", "description_en",
    "sector", "modality", "ai_stage", "languages", "licence", "personal_information",
    "sensitivity", "rights", "required_fields", "label_field", "id_field", "expert_labels",
)
# While the exchange reviews a listing, or while it is on sale, what it describes stays put.
_FROZEN_STATUSES = {ListingStatus.SUBMITTED.value, ListingStatus.APPROVED.value,
                    ListingStatus.SUSPENDED.value}


def _check_codes(values: Mapping[str, Any]) -> None:
    for name, vocabulary in _CODED_FIELDS.items():
        if name in values and values[name] not in vocabulary:
            raise InvalidInput(f"Unknown {name.replace('_', ' ')} code {values[name]!r}.",
                               field=name)
    for code in values.get("languages", ()):
        if code not in LANGUAGES:
            raise InvalidInput(f"Unknown language code {code!r}.", field="languages")
    if values.get("expert_labels") and not (values.get("id_field") and values.get("label_field")):
        raise InvalidInput("Expert labels need the id field and the label field they refer to.",
                           field="expert_labels")
    rights = values.get("rights")
    if rights is not None:
        unknown = sorted(set(rights) - set(RIGHTS))
        if unknown:
            raise InvalidInput(f"Unknown right {unknown[0]!r}; the rights are "
                               f"{', '.join(RIGHTS)}.", field="rights")
        if any(not str(holder).strip() for holder in rights.values()):
            raise InvalidInput("Name the holder of each declared right.", field="rights")


REQUIRED_FIELDS = ("title_zh", "title_en", "sector", "modality", "ai_stage", "licence",
                   "personal_information")


def create_dataset(session: Session, principal: Principal, values: Mapping[str, Any]) -> Dataset:
    """A new dataset of the principal's organization, not yet listed."""
    for name in REQUIRED_FIELDS:
        if not values.get(name):
            raise InvalidInput("This field is required.", field=name)
    _check_codes(values)
    dataset = Dataset(organization_id=principal.organization_id,
                      **{k: v for k, v in values.items() if k in EDITABLE_FIELDS})
    session.add(dataset)
    session.flush()  # the search index and the audit entry need the dataset's id
    search.reindex(session, dataset)
    audit.record(session, "dataset.created", actor=principal.actor,
                 organization_id=principal.organization_id, object_type="dataset",
                 object_id=dataset.id, data={"title_en": dataset.title_en,
                                             "sector": dataset.sector})
    return dataset


def update_dataset(session: Session, principal: Principal, dataset: Dataset,
                   changes: Mapping[str, Any]) -> Dataset:
    """Change a dataset's description; not while its listing is under review or on sale."""
    if dataset.listing is not None and dataset.listing.status in _FROZEN_STATUSES:
        raise Conflict(f"The listing is {dataset.listing.status}; delist it or wait for the "
                       "review before changing the dataset.")
    _check_codes(changes)
    before = {k: getattr(dataset, k) for k in changes}
    for name, value in changes.items():
        setattr(dataset, name, value)
    search.reindex(session, dataset)
    audit.record(session, "dataset.updated", actor=principal.actor,
                 organization_id=dataset.organization_id, object_type="dataset",
                 object_id=dataset.id, data={"before": before, "after": dict(changes)})
    return dataset


def get_dataset_for_owner(session: Session, principal: Principal, dataset_id: int) -> Dataset:
    """The principal's own dataset (another organization's answers 404)."""
    return get_owned(session, Dataset, dataset_id, principal)


def get_visible_dataset(session: Session, principal: Principal | None, dataset_id: int) -> Dataset:
    """A dataset the caller may see: listed ones for everybody; others only for their owner,
    the exchange reviewing them, and the participants of their supply chain."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or not can_see(session, principal, dataset):
        raise NotFound("No such dataset.")
    return dataset


def can_see(session: Session, principal: Principal | None, dataset: Dataset) -> bool:
    listing = dataset.listing
    if listing is not None and listing.status == ListingStatus.APPROVED.value:
        return True
    if principal is None:
        return False
    org_id = principal.organization_id
    if dataset.organization_id == org_id:
        return True
    if listing is not None and listing.exchange_id == org_id and \
            listing.status != ListingStatus.DRAFT.value:
        return True
    return session.scalar(
        select(func.count()).select_from(SupplyChainShare).join(SupplyChainRevision)
        .where(SupplyChainRevision.dataset_id == dataset.id,
               SupplyChainShare.organization_id == org_id)) > 0


# Supply chains ----------------------------------------------------------------------------------

def current_supply_chain(session: Session, dataset_id: int) -> SupplyChainRevision | None:
    """The revision in force now: the newest one."""
    return session.scalar(_newest_revision(SupplyChainRevision, dataset_id))


def current_supply_chain_id(session: Session, dataset_id: int) -> int | None:
    """The id of the revision in force now, without loading its shares (what a usage event
    records)."""
    return session.scalar(_newest_revision(SupplyChainRevision.id, dataset_id))


def _newest_revision(what, dataset_id: int):
    return (select(what).where(SupplyChainRevision.dataset_id == dataset_id)
            .order_by(SupplyChainRevision.revision.desc()).limit(1))


def set_supply_chain(session: Session, principal: Principal, dataset: Dataset,
                     participants: Sequence[Mapping[str, Any]], note: str = "") -> SupplyChainRevision:
    """Record a new revision of who shares in the dataset's revenue.

    Shares are basis points summing to exactly 10,000 (checked by ``pricing``); the owner takes
    part as the supplier; each organization appears once per role.
    """
    if not participants:
        raise InvalidInput("Name at least the supplier.", field="participants")
    rows, seen = [], set()
    for index, participant in enumerate(participants):
        org_id, role = participant["organization_id"], participant["role"]
        where = f"participants[{index}]"
        if role not in CHAIN_ROLES:
            raise InvalidInput(f"Unknown role {role!r}.", field=f"{where}.role")
        if session.get(Organization, org_id) is None:
            raise InvalidInput("No such organization.", field=f"{where}.organization_id")
        if (org_id, role) in seen:
            raise InvalidInput("This organization already has this role in the chain.",
                               field=f"{where}.organization_id")
        seen.add((org_id, role))
        rows.append((f"{role}:{org_id}", participant["share_bps"]))
    try:
        validate_shares(rows)
    except PricingError as exc:
        raise InvalidInput(str(exc), field="participants") from None
    if (dataset.organization_id, "supplier") not in seen:
        raise InvalidInput("The dataset's owner must take part as the supplier.",
                           field="participants")

    latest = current_supply_chain(session, dataset.id)
    revision = SupplyChainRevision(
        dataset_id=dataset.id, revision=(latest.revision + 1) if latest else 1, note=note,
        created_by_id=principal.user_id,
        shares=[SupplyChainShare(position=i, organization_id=p["organization_id"],
                                 role=p["role"], share_bps=p["share_bps"])
                for i, p in enumerate(participants)])
    session.add(revision)
    session.flush()  # the audit entry names the revision
    audit.record(session, "supply_chain.revised", actor=principal.actor,
                 organization_id=dataset.organization_id, object_type="dataset",
                 object_id=dataset.id, data={"revision": revision.revision, "shares": [
                     {"organization_id": p["organization_id"], "role": p["role"],
                      "share_bps": p["share_bps"]} for p in participants]})
    return revision
