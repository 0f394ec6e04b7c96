"""API: the catalogue — datasets, versions, supply chains, listings and their review."""

from __future__ import annotations

from flask import Response, current_app, stream_with_context, url_for
from sqlalchemy import select

from market.accounts.authz import Principal
from market.web.api.blueprint import api
from market.web.api.catalog_schemas import (
    ApproveSchema, CatalogPageSchema, OfferCreateSchema, OfferSchema, CatalogQuerySchema, DatasetSchema, DatasetUpdateSchema,
    DatasetWriteSchema, ImportQuerySchema, ListingSchema, ReasonSchema, RejectSchema,
    ReviewItemSchema, SubmitListingSchema, SupplyChainHistorySchema, SupplyChainSchema,
    SupplyChainWriteSchema, TaxonomySchema, VersionSchema, VersionSummarySchema,
)
from market.web.api.endpoint import Created
from market.web.api.pagination import PageQuerySchema, page_request, page_schema
from market.catalog import importer, listings, offers, services
from market.catalog.browse import FACETS, CatalogQuery, browse
from market.catalog.models import Dataset, DatasetVersion, Offer, SupplyChainRevision
from market.catalog.taxonomy import VOCABULARIES
from market.core.db import utcnow
from market.core.errors import NotFound
from market.core.keyset import Keyset, Page, asc, desc
from market.web.http import db_session

CATALOG = ["Catalogue"]
SUPPLY = ["Supplier"]
REVIEW = ["Listing review"]
UPLOAD_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines",
                "text/csv")


@api.operation("/catalog/taxonomy", "GET", summary="Sectors, modalities, stages and other codes",
               permission=None, response=TaxonomySchema, tags=CATALOG)
def taxonomy():
    """Every code the catalogue accepts, with its Chinese and English label."""
    return {"vocabularies": {name: {code: {"zh": t.zh, "en": t.en} for code, t in terms.items()}
                             for name, terms in VOCABULARIES.items()},
            "reason_codes": {code: {"zh": zh, "en": en}
                             for code, (zh, en) in listings.REASON_CODES.items()}}


@api.operation("/datasets", "GET", summary="Search the catalogue", permission="catalog:read",
               query=CatalogQuerySchema, response=CatalogPageSchema, tags=CATALOG)
def search_datasets(principal: Principal, query: dict):
    """Listed datasets; full text over titles, summaries and descriptions in Chinese and
    English; facet counts for sector, modality, stage, licence and quality grade."""
    filters = {name: query[name] for name in FACETS if query.get(name)}
    page = browse(db_session(), CatalogQuery(q=query["q"], filters=filters, sort=query["sort"],
                                             cursor=query["cursor"], limit=query["limit"]))
    return {"items": [{"dataset": d, "version": v, "relevance": r} for d, v, r in page.items],
            "facets": page.facets, "total": page.total, "next_cursor": page.next_cursor}


@api.operation("/datasets", "POST", summary="Create a dataset", permission="catalog:write",
               body=DatasetWriteSchema, response=DatasetSchema, status=201, tags=SUPPLY,
               errors=(422,))
def create_dataset(principal: Principal, body: dict):
    dataset = services.create_dataset(db_session(), principal, body)
    return Created(dataset, url_for("api.get_dataset", dataset_id=dataset.id))


@api.operation("/supplier/datasets", "GET", summary="The organization's own datasets",
               permission="catalog:write", query=PageQuerySchema,
               response=page_schema(DatasetSchema), tags=SUPPLY)
def own_datasets(principal: Principal, query: dict):
    """Every dataset of the caller's organization, listed or not, with its listing status;
    newest first."""
    return Keyset(db_session(), select(Dataset).where(
        Dataset.organization_id == principal.organization_id),
        [desc(Dataset.id)]).page(page_request(query))


@api.operation("/datasets/<int:dataset_id>", "GET", summary="A dataset",
               permission="catalog:read", response=DatasetSchema, tags=CATALOG, errors=(404,))
def get_dataset(principal: Principal, dataset_id: int):
    """Listed datasets for everybody; unlisted ones only for their owner, reviewing exchange
    and supply-chain participants."""
    return services.get_visible_dataset(db_session(), principal, dataset_id)


@api.operation("/datasets/<int:dataset_id>", "PATCH", summary="Change a dataset's description",
               permission="catalog:write", body=DatasetUpdateSchema, response=DatasetSchema,
               tags=SUPPLY, errors=(404, 409))
def update_dataset(principal: Principal, dataset_id: int, body: dict):
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    return services.update_dataset(session, principal, dataset, body)


@api.operation("/datasets/<int:dataset_id>/versions", "POST",
               summary="Import a version from JSONL or CSV", permission="catalog:write",
               query=ImportQuerySchema, response=VersionSchema, status=201, tags=SUPPLY,
               errors=(404, 413, 415, 422), upload=UPLOAD_TYPES)
def import_version(principal: Principal, dataset_id: int, query: dict, stream, content_type,
                   content_length):
    """Send the file as the body (``application/x-ndjson`` or ``text/csv``); it is streamed.
    A bad record aborts the import and the error names its line."""
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    version = importer.import_version(
        session, principal, dataset, stream,
        source_format="csv" if content_type == "text/csv" else "jsonl",
        encoding=current_app.config["TOKEN_ENCODING"], filename=query["filename"],
        notes=query["notes"], expected_bytes=content_length,
        **importer.limits(current_app.config))
    return Created(version, url_for("api.get_version", dataset_id=dataset.id,
                                    number=version.number))


@api.operation("/datasets/<int:dataset_id>/versions", "GET", summary="A dataset's versions",
               permission="catalog:read", query=PageQuerySchema,
               response=page_schema(VersionSummarySchema), tags=CATALOG, errors=(404,))
def list_versions(principal: Principal, dataset_id: int, query: dict):
    """The versions that passed review, by number; the supplier sees its drafts too, and the
    exchange the versions submitted to it."""
    session = db_session()
    dataset = services.get_visible_dataset(session, principal, dataset_id)
    return listings.visible_versions(session, principal, dataset).page(page_request(query))


def _version(principal: Principal, dataset_id: int, number: int) -> DatasetVersion:
    session = db_session()
    dataset = services.get_visible_dataset(session, principal, dataset_id)
    return listings.get_visible_version(session, principal, dataset, number)


@api.operation("/datasets/<int:dataset_id>/versions/<int:number>", "GET",
               summary="A version: counts, schema, quality report, samples",
               permission="catalog:read", response=VersionSchema, tags=CATALOG, errors=(404,))
def get_version(principal: Principal, dataset_id: int, number: int):
    """A version that passed review; a draft only for its supplier, and for the exchange once
    it was submitted there (404 for anybody else)."""
    return _version(principal, dataset_id, number)


@api.operation("/datasets/<int:dataset_id>/versions/<int:number>/export", "GET",
               summary="Export a version as canonical JSONL", permission="catalog:read",
               tags=CATALOG, errors=(404,), raw_response="application/x-ndjson")
def export_version(principal: Principal, dataset_id: int, number: int):
    """For the dataset's owner and its reviewing exchange. The body's SHA-256 equals
    ``content_sha256`` (also sent as ``X-Content-SHA256``)."""
    version = _version(principal, dataset_id, number)
    listing = version.dataset.listing
    if principal.organization_id != version.dataset.organization_id and not (
            listing is not None and listing.exchange_id == principal.organization_id):
        raise NotFound("No such version.")
    session = current_app.extensions["market.db"].session()  # outlives the request's session
    version_id = version.id

    def generate():
        try:
            yield from importer.export_lines(session, session.get(DatasetVersion, version_id))
        finally:
            session.close()

    response = Response(stream_with_context(generate()), mimetype="application/x-ndjson")
    response.headers["X-Content-SHA256"] = version.content_sha256
    response.headers["Content-Disposition"] = (
        f'attachment; filename="dataset-{dataset_id}-v{number}.jsonl"')
    return response


@api.operation("/datasets/<int:dataset_id>/supply-chain", "GET",
               summary="Who shares in a dataset's revenue, and the history",
               permission="catalog:read", response=SupplyChainHistorySchema, tags=CATALOG,
               errors=(404,))
def get_supply_chain(principal: Principal, dataset_id: int):
    session = db_session()
    dataset = services.get_visible_dataset(session, principal, dataset_id)
    revisions = session.scalars(select(SupplyChainRevision).where(
        SupplyChainRevision.dataset_id == dataset.id)
        .order_by(SupplyChainRevision.revision.desc())).all()
    return {"current": revisions[0] if revisions else None, "revisions": revisions}


@api.operation("/datasets/<int:dataset_id>/supply-chain", "PUT",
               summary="Declare a new revision of the supply chain", permission="catalog:write",
               body=SupplyChainWriteSchema, response=SupplyChainSchema, tags=SUPPLY,
               errors=(404, 422))
def put_supply_chain(principal: Principal, dataset_id: int, body: dict):
    """Shares are basis points and must total exactly 10,000. Earlier revisions stay as they
    were, for the orders and charges made under them."""
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    return services.set_supply_chain(session, principal, dataset, body["participants"],
                                     body["note"])


@api.operation("/datasets/<int:dataset_id>/offers", "GET", summary="A dataset's offers",
               permission="catalog:read", query=PageQuerySchema,
               response=page_schema(OfferSchema), tags=CATALOG, errors=(404,))
def list_offers(principal: Principal, dataset_id: int, query: dict):
    """Active and retired offers, oldest first."""
    session = db_session()
    dataset = services.get_visible_dataset(session, principal, dataset_id)
    return Keyset(session, select(Offer).where(Offer.dataset_id == dataset.id),
                  [asc(Offer.id)]).page(page_request(query))


@api.operation("/datasets/<int:dataset_id>/offers", "POST", summary="Add an offer",
               permission="catalog:write", body=OfferCreateSchema, response=OfferSchema,
               status=201, tags=SUPPLY, errors=(404, 409, 422))
def add_offer(principal: Principal, dataset_id: int, body: dict):
    """A subscription plan, mall package, custom quote, metered or royalty rate card. Bad terms
    are named as ``terms.<field>``."""
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    return offers.add_offer(session, principal, dataset, body["terms"])


@api.operation("/datasets/<int:dataset_id>/offers/<int:offer_id>/retire", "POST",
               summary="Retire an offer", permission="catalog:write", response=OfferSchema,
               tags=SUPPLY, errors=(404,))
def retire_offer(principal: Principal, dataset_id: int, offer_id: int):
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    return offers.retire_offer(session, principal, offers.get_offer(session, dataset, offer_id))


@api.operation("/datasets/<int:dataset_id>/listing", "POST",
               summary="Submit a version for listing", permission="catalog:write",
               body=SubmitListingSchema, response=ListingSchema, status=201, tags=SUPPLY,
               errors=(404, 409, 422))
def submit_listing(principal: Principal, dataset_id: int, body: dict):
    """The version is frozen from now on; the exchange reviews it by the due date."""
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    version = session.scalar(select(DatasetVersion.id).where(
        DatasetVersion.dataset_id == dataset.id, DatasetVersion.number == body["version"]))
    listing = listings.submit(session, principal, dataset, version_id=version or -1,
                              exchange_id=body["exchange_id"],
                              review_days=current_app.config["LISTING_REVIEW_DAYS"])
    return Created(listing, url_for("api.get_listing", listing_id=listing.id))


@api.operation("/datasets/<int:dataset_id>/listing/delist", "POST",
               summary="Stop selling a dataset", permission="catalog:write", body=ReasonSchema,
               response=ListingSchema, tags=SUPPLY, errors=(404, 409))
def delist_own(principal: Principal, dataset_id: int, body: dict):
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    if dataset.listing is None:
        raise NotFound("This dataset has no listing.")
    return listings.delist(session, principal, dataset.listing, text=body["text"])


@api.operation("/listings/<int:listing_id>", "GET", summary="A listing and its review history",
               permission="catalog:read", response=ListingSchema, tags=REVIEW, errors=(404,))
def get_listing(principal: Principal, listing_id: int):
    """For the dataset's supplier and the reviewing exchange."""
    return listings.get_for_party(db_session(), principal, listing_id)


@api.operation("/review/listings", "GET", summary="The exchange's review queue",
               permission="listings:review", query=PageQuerySchema,
               response=page_schema(ReviewItemSchema), tags=REVIEW)
def review_queue(principal: Principal, query: dict):
    """Submissions in due-date order, each with its automatic checklist."""
    session, now = db_session(), utcnow()
    page = listings.review_queue(session, principal).page(page_request(query))
    return Page([{"listing": listing,
                  "checklist": listings.checklist(session, listing.dataset, listing.version),
                  "overdue": listing.due_at is not None and listing.due_at < now}
                 for listing in page.items], page.next_cursor)


def _for_review(principal: Principal, listing_id: int):
    session = db_session()
    return session, listings.get_for_reviewer(session, principal, listing_id)


@api.operation("/listings/<int:listing_id>/approve", "POST", summary="Approve a listing",
               permission="listings:review", body=ApproveSchema, response=ListingSchema,
               tags=REVIEW, errors=(404, 409))
def approve_listing(principal: Principal, listing_id: int, body: dict):
    session, listing = _for_review(principal, listing_id)
    return listings.approve(session, principal, listing, note=body["text"])


@api.operation("/listings/<int:listing_id>/reject", "POST",
               summary="Reject a listing with reasons", permission="listings:review",
               body=RejectSchema, response=ListingSchema, tags=REVIEW, errors=(404, 409))
def reject_listing(principal: Principal, listing_id: int, body: dict):
    session, listing = _for_review(principal, listing_id)
    return listings.reject(session, principal, listing, reasons=body["reasons"],
                           text=body["text"])


@api.operation("/listings/<int:listing_id>/suspend", "POST", summary="Suspend a listing",
               permission="listings:review", body=ReasonSchema, response=ListingSchema,
               tags=REVIEW, errors=(404, 409))
def suspend_listing(principal: Principal, listing_id: int, body: dict):
    session, listing = _for_review(principal, listing_id)
    return listings.suspend(session, principal, listing, text=body["text"])


@api.operation("/listings/<int:listing_id>/reinstate", "POST",
               summary="Reinstate a suspended listing", permission="listings:review",
               body=ApproveSchema, response=ListingSchema, tags=REVIEW, errors=(404, 409))
def reinstate_listing(principal: Principal, listing_id: int, body: dict):
    session, listing = _for_review(principal, listing_id)
    return listings.reinstate(session, principal, listing, text=body["text"])


@api.operation("/listings/<int:listing_id>/delist", "POST", summary="Delist a listing",
               permission="listings:review", body=ReasonSchema, response=ListingSchema,
               tags=REVIEW, errors=(404, 409))
def delist_listing(principal: Principal, listing_id: int, body: dict):
    session, listing = _for_review(principal, listing_id)
    return listings.delist(session, principal, listing, text=body["text"])
