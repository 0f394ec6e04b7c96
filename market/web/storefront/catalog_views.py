"""Storefront pages of the catalogue: browsing, the dataset page, the supplier's console and the
exchange's review console."""

from __future__ import annotations

from decimal import Decimal

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import select

from market.accounts.authz import Principal
from market.accounts.models import Organization, OrganizationRole
from market.catalog import importer, listings, offers, services
from market.catalog.browse import FACETS, SORTS, CatalogQuery, browse
from market.catalog.listings import REASON_CODES
from market.catalog.models import Dataset, DatasetVersion, Listing, ListingStatus
from market.catalog.taxonomy import VOCABULARIES
from market.core.db import utcnow
from market.core.errors import MarketError
from market.web.storefront.blueprint import storefront
from market.web.storefront.common import form_error
from market.web.storefront.forms import (
    DatasetForm, NoteForm, OfferForm, RejectForm, SubmitListingForm, SupplyChainForm, UploadForm,
)
from market.web.storefront.views import signed_in
from market.web.http import db_session, session_principal

UPLOAD_ENDPOINTS = {"storefront.upload_version"}


@storefront.app_context_processor
def _catalog_context():
    return {"vocab": VOCABULARIES, "reason_codes": REASON_CODES}


@storefront.app_template_filter("percent")
def _percent(value: str) -> str:
    return f"{(Decimal(value) * 100).normalize():f}%"


@storefront.get("/catalog")
def catalog():
    filters = {name: request.args[name] for name in FACETS if request.args.get(name)}
    sort = request.args.get("sort", "relevance")
    query = CatalogQuery(q=request.args.get("q", "").strip()[:200], filters=filters,
                         sort=sort if sort in SORTS else "relevance",
                         cursor=request.args.get("cursor"), limit=20)
    page = browse(db_session(), query)  # a bad cursor: 422 naming it, from the app's handler
    return render_template("catalog/index.html", page=page, query=query, sorts=SORTS)


@storefront.get("/datasets/<int:dataset_id>")
def dataset_page(dataset_id: int):
    session = db_session()
    principal = session_principal()
    dataset = services.get_visible_dataset(session, principal, dataset_id)
    listing = dataset.listing
    # The listed (or submitted) version, else the newest: whichever of them the visitor may read
    visible = listings.visible_versions(session, principal, dataset).all()
    version = listing.version if listing is not None and listing.version in visible else (
        visible[-1] if visible else None)
    chain = services.current_supply_chain(session, dataset.id)
    return render_template("catalog/dataset.html", dataset=dataset, version=version,
                           chain=chain, listing=listing,
                           is_owner=principal is not None
                           and principal.organization_id == dataset.organization_id)


# Supplier console ------------------------------------------------------------------------------

@storefront.get("/supplier/datasets")
@signed_in("catalog:write")
def supplier_datasets(principal: Principal):
    datasets = db_session().scalars(select(Dataset).where(
        Dataset.organization_id == principal.organization_id).order_by(Dataset.id.desc())).all()
    return render_template("catalog/supplier_datasets.html", datasets=datasets)


@storefront.route("/supplier/datasets/new", methods=["GET", "POST"])
@signed_in("catalog:write")
def new_dataset(principal: Principal):
    form = DatasetForm()
    if form.validate_on_submit():
        try:
            dataset = services.create_dataset(db_session(), principal, form.values())
        except MarketError as exc:
            form_error(form, exc)
        else:
            flash(_("Dataset created. Now import its first version."), "success")
            return redirect(url_for("storefront.manage_dataset", dataset_id=dataset.id))
    return render_template("catalog/dataset_form.html", form=form), 422 if form.errors else 200


def _listing_choices(form: SubmitListingForm, dataset: Dataset) -> SubmitListingForm:
    """The submit-for-listing form offers the dataset's versions and the exchanges."""
    exchanges = db_session().scalars(select(Organization).join(OrganizationRole).where(
        OrganizationRole.role == "exchange").order_by(Organization.name)).all()
    form.version.choices = [(v.number, f"v{v.number}") for v in reversed(dataset.versions)]
    form.exchange_id.choices = [(e.id, e.name) for e in exchanges]
    return form


def _manage_context(principal: Principal, dataset: Dataset, **forms) -> dict:
    session = db_session()
    submit = _listing_choices(forms.get("submit_form") or SubmitListingForm(), dataset)
    chain = services.current_supply_chain(session, dataset.id)
    chain_form = forms.get("chain_form")
    if chain_form is None:
        chain_form = SupplyChainForm()
        shares = chain.shares if chain else []
        for row, share in zip(chain_form.rows, shares):
            row.organization_id.data = share.organization_id
            row.role.data = share.role
            row.share_percent.data = Decimal(share.share_bps) / 100
        if not shares:
            chain_form.rows[0].organization_id.data = dataset.organization_id
            chain_form.rows[0].role.data = "supplier"
            chain_form.rows[0].share_percent.data = Decimal(100)
    return {"dataset": dataset, "upload_form": forms.get("upload_form") or UploadForm(),
            "offer_form": forms.get("offer_form") or OfferForm(),
            "chain_form": chain_form, "submit_form": submit, "chain": chain,
            "listing": dataset.listing, "organizations": session.scalars(
                select(Organization).order_by(Organization.name)).all()}


@storefront.get("/supplier/datasets/<int:dataset_id>")
@signed_in("catalog:write")
def manage_dataset(principal: Principal, dataset_id: int):
    dataset = services.get_dataset_for_owner(db_session(), principal, dataset_id)
    return render_template("catalog/manage.html", **_manage_context(principal, dataset))


@storefront.post("/supplier/datasets/<int:dataset_id>/versions")
@signed_in("catalog:write")
def upload_version(principal: Principal, dataset_id: int):
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    form = UploadForm()
    if form.validate_on_submit():
        upload = form.file.data
        name = upload.filename or ""
        source_format = "csv" if name.lower().endswith(".csv") else "jsonl"
        try:
            version = importer.import_version(
                session, principal, dataset, upload.stream, source_format=source_format,
                encoding=current_app.config["TOKEN_ENCODING"], filename=name[:255],
                notes=form.notes.data or "", expected_bytes=request.content_length,
                **importer.limits(current_app.config))
        except MarketError as exc:
            session.rollback()  # nothing of a failed import is kept
            form.file.errors = [exc.detail]
        else:
            flash(_("Version %(n)s imported: %(records)s records, %(tokens)s tokens.",
                    n=version.number, records=version.record_count,
                    tokens=version.token_count), "success")
            target = url_for("storefront.manage_dataset", dataset_id=dataset.id)
            if _wants_json():  # the page's progress bar sent it, and navigates itself
                return jsonify(redirect=target)
            return redirect(target)
    if _wants_json():
        return jsonify(errors={name: list(errors) for name, errors in form.errors.items()
                               if name != "csrf_token"} or
                       {"file": [_("The import failed.")]}), 422
    return render_template("catalog/manage.html",
                           **_manage_context(principal, dataset, upload_form=form)), 422


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


def _manage_step(principal: Principal, dataset_id: int, form, form_name: str, step, done: str,
                 *, refusal=lambda exc: exc.detail, choices=None):
    """A supplier's change from one form of its dataset's manage page: ``step(session, dataset,
    form)`` taken and back to the page, or the page again (422) with the service's refusal
    above the form. ``choices(form, dataset)`` fills a form's choices before it is validated."""
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    if choices is not None:
        choices(form, dataset)
    if form.validate_on_submit():
        try:
            step(session, dataset, form)
        except MarketError as exc:
            form.form_errors.append(refusal(exc))
        else:
            flash(done, "success")
            return redirect(url_for("storefront.manage_dataset", dataset_id=dataset.id))
    return render_template("catalog/manage.html",
                           **_manage_context(principal, dataset, **{form_name: form})), 422


def _participants(form: SupplyChainForm) -> list[dict]:
    """The supply chain's filled rows, shares from percent to basis points."""
    participants = []
    for row in form.rows:
        if row.organization_id.data is None and row.share_percent.data is None:
            continue
        percent = row.share_percent.data or Decimal(0)
        participants.append({"organization_id": row.organization_id.data or 0,
                             "role": row.role.data,
                             "share_bps": int((percent * 100).to_integral_value())})
    return participants


@storefront.post("/supplier/datasets/<int:dataset_id>/supply-chain")
@signed_in("catalog:write")
def save_supply_chain(principal: Principal, dataset_id: int):
    return _manage_step(
        principal, dataset_id, SupplyChainForm(), "chain_form",
        lambda session, dataset, form: services.set_supply_chain(
            session, principal, dataset, _participants(form), form.note.data or ""),
        _("Supply chain saved as a new revision."))


def _submit(session, principal: Principal, dataset: Dataset, form: SubmitListingForm) -> None:
    version_id = session.scalar(select(DatasetVersion.id).where(
        DatasetVersion.dataset_id == dataset.id, DatasetVersion.number == form.version.data))
    listings.submit(session, principal, dataset, version_id=version_id or -1,
                    exchange_id=form.exchange_id.data,
                    review_days=current_app.config["LISTING_REVIEW_DAYS"])


@storefront.post("/supplier/datasets/<int:dataset_id>/listing")
@signed_in("catalog:write")
def submit_for_listing(principal: Principal, dataset_id: int):
    return _manage_step(
        principal, dataset_id, SubmitListingForm(), "submit_form",
        lambda session, dataset, form: _submit(session, principal, dataset, form),
        _("Submitted for review."), choices=_listing_choices)


@storefront.post("/supplier/datasets/<int:dataset_id>/offers")
@signed_in("catalog:write")
def add_offer(principal: Principal, dataset_id: int):
    return _manage_step(
        principal, dataset_id, OfferForm(), "offer_form",
        lambda session, dataset, form: offers.add_offer(
            session, principal, dataset, form.terms(dataset.organization.default_currency)),
        _("Offer added."),
        refusal=lambda exc: f"{exc.field}: {exc.detail}" if exc.field else exc.detail)


@storefront.post("/supplier/datasets/<int:dataset_id>/offers/<int:offer_id>/retire")
@signed_in("catalog:write")
def retire_offer(principal: Principal, dataset_id: int, offer_id: int):
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    if not NoteForm().validate_on_submit():
        abort(400)
    offers.retire_offer(session, principal, offers.get_offer(session, dataset, offer_id))
    flash(_("Offer retired."), "success")
    return redirect(url_for("storefront.manage_dataset", dataset_id=dataset.id))


# Exchange console ------------------------------------------------------------------------------

@storefront.get("/exchange/listings")
@signed_in("listings:review")
def review_queue(principal: Principal):
    session, now = db_session(), utcnow()
    queue = [(listing, listings.checklist(session, listing.dataset, listing.version))
             for listing in listings.review_queue(session, principal).all()]
    decided = session.scalars(select(Listing).where(
        Listing.exchange_id == principal.organization_id,
        Listing.status.in_(["approved", "rejected", "suspended", "delisted"]))
        .order_by(Listing.decided_at.desc()).limit(50)).all()
    return render_template("catalog/review_queue.html", queue=queue, decided=decided, now=now)


def _review_page(principal: Principal, listing: Listing, reject_form=None, status=200):
    reject_form = reject_form or RejectForm()
    reject_form.reasons.choices = [(code, label[0] if _zh() else label[1])
                                   for code, label in REASON_CODES.items()]
    checklist = listings.checklist(db_session(), listing.dataset, listing.version)
    return render_template("catalog/review.html", listing=listing, checklist=checklist,
                           reject_form=reject_form, note_form=NoteForm()), status


def _zh() -> bool:
    return str(get_locale()).startswith("zh")


@storefront.get("/exchange/listings/<int:listing_id>")
@signed_in("listings:review")
def review_listing(principal: Principal, listing_id: int):
    return _review_page(principal, listings.get_for_reviewer(db_session(), principal, listing_id))


@storefront.post("/exchange/listings/<int:listing_id>/<action>")
@signed_in("listings:review")
def decide_listing(principal: Principal, listing_id: int, action: str):
    session = db_session()
    listing = listings.get_for_reviewer(session, principal, listing_id)
    if action == "reject":
        form = RejectForm()
        form.reasons.choices = [(code, code) for code in REASON_CODES]
        if not form.validate_on_submit():
            return _review_page(principal, listing, form, 422)
        call = lambda: listings.reject(session, principal, listing, reasons=form.reasons.data,  # noqa: E731
                                       text=form.text.data)
    else:
        form = NoteForm()
        if not form.validate_on_submit():
            abort(400)
        actions = {"approve": lambda: listings.approve(session, principal, listing,
                                                      note=form.text.data or ""),
                   "suspend": lambda: listings.suspend(session, principal, listing,
                                                      text=form.text.data or ""),
                   "reinstate": lambda: listings.reinstate(session, principal, listing,
                                                          text=form.text.data or ""),
                   "delist": lambda: listings.delist(session, principal, listing,
                                                    text=form.text.data or "")}
        if action not in actions:
            abort(404)
        call = actions[action]
    try:
        call()
    except MarketError as exc:
        flash(exc.detail, "error")
        return redirect(url_for("storefront.review_listing", listing_id=listing.id))
    flash(_listing_decided(listing.status), "success")
    return redirect(url_for("storefront.review_queue"))


def _listing_decided(status: str) -> str:
    """What the reviewer is told after a decision, in the page's language."""
    return {
        ListingStatus.APPROVED.value: _("Listing approved: it is on the marketplace."),
        ListingStatus.REJECTED.value: _("Listing rejected: the supplier sees your reasons."),
        ListingStatus.SUSPENDED.value: _("Listing suspended: nobody can buy it until it is "
                                         "reinstated."),
        ListingStatus.DELISTED.value: _("Listing delisted: its sales have ended."),
    }.get(status, _("Listing updated."))
