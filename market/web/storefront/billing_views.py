"""Storefront pages for buying: the cart, orders and their payment, holdings, certificates and
their public verification, and the finance console (bank receipts, lookups, refunds).

Thin views over the same services as ``market.web.api.billing``: parse a form, call one service,
render. The cart lives in the signed session cookie, so any worker can serve the next request;
its prices are only an indication, the order is priced when it is placed.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlsplit

from flask import (
    abort, current_app, flash, redirect, render_template, request, session, url_for,
)
from flask_babel import gettext as _
from sqlalchemy import select

from billing import certificates, entitlements, invoices, orders
from billing.errors import CardPaymentInFlight
from billing.finance import finance_may_act, get_payment_for_finance
from billing.payments import bank_transfer, refunds
from billing.models import Certificate, InvoiceStatus, Order, OrderLine, RefundStatus
from market.accounts.authz import Principal
from market.accounts.models import Organization
from market.catalog.models import Dataset, Offer
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.core.keyset import PageRequest
from market.web.storefront.billing_forms import (
    CartItemForm, CheckoutForm, ReceiptForm, ReferenceLookupForm, RefundForm, TokenPackForm,
)
from market.web.formatting import format_money
from market.web.storefront.blueprint import storefront
from market.web.storefront.common import (
    budget_lines, dataset_title, form_error, require_action_form, same_site,
)
from market.web.storefront.forms import ActionForm
from market.web.storefront.views import signed_in
from market.web.http import (
    CONTENT_SECURITY_POLICY, billing_settings, db_session, end_request_transaction, gateway,
    viewer_organization_ids,
)
from pricing.errors import PricingError
from pricing.money import Money
from pricing.offers import offer_from_dict
from pricing.quotes import quote

CART_KEY = "cart"
MAX_CART_LINES = 50  # what the API's checkout accepts


def _db():
    return current_app.extensions["market.db"]


# The cart ---------------------------------------------------------------------------------------

def _cart() -> list[dict]:
    return [dict(item) for item in session.get(CART_KEY, [])]


def _save_cart(items: list[dict]) -> None:
    session[CART_KEY] = items


def _cart_lines(items: list[dict]) -> tuple[list[dict], list[Money]]:
    """Each item with its offer and an indicative quote, and the totals per currency."""
    lines, totals = [], {}
    for item in items:
        offer = db_session().get(Offer, item["offer_id"])
        line = {"offer_id": item["offer_id"], "quantity": item["quantity"], "offer": offer,
                "title": dataset_title(offer.dataset) if offer else "", "quote": None}
        if offer is not None and offer.kind == "mall_package" and offer.retired_at is None:
            try:
                line["quote"] = quote(offer_from_dict(offer.terms), quantity=item["quantity"])
            except PricingError:
                line["quote"] = None
        if line["quote"] is not None:
            total = line["quote"].total
            totals[total.currency] = totals.get(total.currency, Money.zero(total.currency)) + total
        lines.append(line)
    return lines, list(totals.values())


def _checkout_form(principal: Principal, **kwargs) -> CheckoutForm:
    return CheckoutForm(card_enabled=gateway() is not None,
                        budget_lines=budget_lines(principal), **kwargs)


def _render_cart(principal: Principal, checkout_form: CheckoutForm | None = None,
                 status: int = 200):
    lines, totals = _cart_lines(_cart())
    return render_template(
        "billing/cart.html", lines=lines, totals=totals,
        checkout_form=checkout_form or _checkout_form(principal, formdata=None),
        card_enabled=gateway() is not None), status


@storefront.get("/cart")
@signed_in("billing:read")
def cart(principal: Principal):
    return _render_cart(principal)


@storefront.post("/cart")
@signed_in("billing:write")
def add_to_cart(principal: Principal):
    form = CartItemForm()
    if not form.validate_on_submit():
        flash(_("Choose a quantity of at least 1."), "error")
        return redirect(request.referrer if same_site(request.referrer)
                        else url_for("storefront.cart"))
    try:
        offer = orders.sellable_offer(db_session(), principal, form.offer_id.data,
                                      kinds=("mall_package",), field="offer_id")
    except (InvalidInput, Conflict, NotFound) as exc:
        flash(exc.detail, "error")
        return redirect(url_for("storefront.cart"))
    items = _cart()
    existing = next((i for i in items if i["offer_id"] == offer.id), None)
    if existing is not None:
        existing["quantity"] = min(existing["quantity"] + form.quantity.data,
                                   orders.MAX_QUANTITY)
    elif len(items) >= MAX_CART_LINES:
        flash(_("The cart is full: check out what is in it first."), "error")
        return redirect(url_for("storefront.cart"))
    else:
        items.append({"offer_id": offer.id, "quantity": form.quantity.data})
    _save_cart(items)
    flash(_("Added to the cart."), "success")
    return redirect(url_for("storefront.cart"))


@storefront.post("/cart/<int:offer_id>/quantity")
@signed_in("billing:write")
def change_cart_quantity(principal: Principal, offer_id: int):
    form = CartItemForm()
    items = _cart()
    item = next((i for i in items if i["offer_id"] == offer_id), None)
    if item is None:
        abort(404)
    if not form.validate_on_submit():
        flash(_("The quantity must be a whole number from 1 to %(max)s.",
                max=orders.MAX_QUANTITY), "error")
        return redirect(url_for("storefront.cart"))
    item["quantity"] = form.quantity.data
    _save_cart(items)
    return redirect(url_for("storefront.cart"))


@storefront.post("/cart/<int:offer_id>/remove")
@signed_in("billing:write")
def remove_from_cart(principal: Principal, offer_id: int):
    require_action_form()
    _save_cart([i for i in _cart() if i["offer_id"] != offer_id])
    return redirect(url_for("storefront.cart"))


@storefront.post("/cart/checkout")
@signed_in("billing:write")
def checkout(principal: Principal):
    form = _checkout_form(principal)
    if form.validate_on_submit():
        items = [orders.CartItem(offer_id=i["offer_id"], quantity=i["quantity"])
                 for i in _cart()]
        try:
            order = orders.place_mall_order(
                db_session(), principal, items, payment_method=form.payment_method.data,
                note=form.note.data or "", budget_line_id=form.budget_line_id.data,
                purchase_order_number=form.purchase_order_number.data)
        except (InvalidInput, Conflict, NotFound) as exc:
            form_error(form, exc)
        else:
            _save_cart([])
            flash(_("Order %(number)s placed.", number=order.number), "success")
            for warning in order.budget_warnings:
                flash(warning, "warning")
            return redirect(url_for("storefront.order_page", order_id=order.id))
    return _render_cart(principal, form, 422)


# Orders -----------------------------------------------------------------------------------------

@storefront.get("/orders")
@signed_in("billing:read")
def order_list(principal: Principal):
    return render_template("billing/orders.html", orders=orders.list_orders(
        db_session(), principal).page(PageRequest(cursor=request.args.get("cursor"))))


def _certificates_of(order: Order) -> dict[int, Certificate]:
    ids = [line.id for line in order.lines]
    return {c.order_line_id: c for c in db_session().scalars(
        select(Certificate).where(Certificate.order_line_id.in_(ids)))} if ids else {}


@storefront.get("/orders/<int:order_id>")
@signed_in("billing:read")
def order_page(principal: Principal, order_id: int):
    order = orders.get_order(db_session(), principal, order_id)
    return render_template("billing/order.html", order=order,
                           certificates=_certificates_of(order),
                           payee_bank_account=billing_settings().payee_bank_account,
                           card_enabled=gateway() is not None)


@storefront.post("/orders/<int:order_id>/pay/bank-transfer")
@signed_in("billing:write")
def pay_by_bank_transfer(principal: Principal, order_id: int):
    require_action_form()
    session_ = db_session()
    order = orders.get_order(session_, principal, order_id, for_update=True)
    try:
        invoice = invoices.issue_invoice(session_, order, billing_settings(), principal.actor)
    except CardPaymentInFlight:
        raise Conflict(_("A card payment for this order is in progress."), field="order") from None
    flash(_("Invoice %(number)s issued: transfer the amount with the payment reference "
            "%(reference)s.", number=invoice.number, reference=invoice.payment_reference),
          "success")
    return redirect(url_for("storefront.order_page", order_id=order.id))


@storefront.post("/orders/<int:order_id>/cancel")
@signed_in("billing:write")
def cancel_order(principal: Principal, order_id: int):
    require_action_form()
    session_ = db_session()
    order = orders.get_order(session_, principal, order_id, for_update=True)
    orders.cancel_order(session_, principal, order)
    flash(_("Order %(number)s cancelled.", number=order.number), "success")
    return redirect(url_for("storefront.order_page", order_id=order.id))


def _origin(url: str) -> str | None:
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def _card_page_policy() -> str:
    """The site's policy, widened for Stripe.js on this page only: its script, the frames its
    card field lives in, and the calls it makes to the processor's API."""
    config = current_app.config
    js = _origin(config["STRIPE_JS_URL"])
    api = _origin(config.get("STRIPE_API_BASE") or "https://api.stripe.com")
    extra = {"script-src": [js], "frame-src": [js], "connect-src": [js, api]}
    directives = [d for d in CONTENT_SECURITY_POLICY.split("; ")]
    names = [d.split(" ", 1)[0] for d in directives]
    for name, origins in extra.items():
        sources = " ".join(dict.fromkeys(o for o in origins if o))
        if not sources:
            continue
        if name in names:
            i = names.index(name)
            directives[i] = f"{directives[i]} {sources}"
        else:
            directives.append(f"{name} 'self' {sources}")
    return "; ".join(directives)


@storefront.get("/orders/<int:order_id>/pay/card")
@signed_in("billing:write")
def pay_by_card_page(principal: Principal, order_id: int):
    if gateway() is None:
        raise Conflict(_("Card payments are not enabled here; pay by bank transfer."))
    order = orders.get_order(db_session(), principal, order_id)
    html = render_template("billing/pay_card.html", order=order,
                           stripe_js_url=current_app.config["STRIPE_JS_URL"])
    return html, 200, {"Content-Security-Policy": _card_page_policy()}


def _own_line(principal: Principal, order_id: int, line_id: int) -> tuple[Order, OrderLine]:
    order = orders.get_order(db_session(), principal, order_id)
    line = next((line for line in order.lines if line.id == line_id), None)
    if line is None:
        raise NotFound("No such order line.")
    return order, line


@storefront.get("/orders/<int:order_id>/lines/<int:line_id>/certificate")
@signed_in("billing:read")
def certificate_page(principal: Principal, order_id: int, line_id: int):
    order, line = _own_line(principal, order_id, line_id)
    certificate = _certificates_of(order).get(line.id)
    if certificate is None:
        raise NotFound(_("No certificate: the line is not paid yet."))
    return render_template("billing/certificate.html", order=order, line=line,
                           certificate=certificate)


@storefront.get("/certificates/verify")
def verify_certificate():
    number = request.args.get("number", "").strip()[:64]
    digest = request.args.get("digest", "").strip()[:128] or None
    result = None
    if number:
        result = certificates.verify(db_session(), number, billing_settings().certificate_key,
                                     presented_digest=digest,
                                     viewer_organization_ids=viewer_organization_ids())
    return render_template("billing/verify.html", number=number, digest=digest or "",
                           result=result)


# Holdings ---------------------------------------------------------------------------------------

def _token_pack_form(principal: Principal, held: list[Dataset], *,
                     from_request: bool) -> TokenPackForm:
    extra = {} if from_request else {"formdata": None}
    return TokenPackForm(card_enabled=gateway() is not None,
                         datasets=[(d, dataset_title(d)) for d in held],
                         budget_lines=budget_lines(principal), **extra)


def _holdings(principal: Principal):
    """The organization's entitlements, wallets and the datasets they are for (by id)."""
    session_ = db_session()
    held_entitlements = entitlements.list_entitlements(session_, principal.organization_id)
    wallets = entitlements.list_wallets(session_, principal.organization_id)
    ids = {e.dataset_id for e in held_entitlements} | {
        w.dataset_id for w in wallets if w.dataset_id}
    datasets = {d.id: d for d in session_.scalars(
        select(Dataset).where(Dataset.id.in_(ids)))} if ids else {}
    return held_entitlements, wallets, datasets


def _held(datasets: dict[int, Dataset]) -> list[Dataset]:
    return sorted(datasets.values(), key=lambda d: d.id)


def _render_holdings(principal: Principal, form: TokenPackForm | None = None, status=200):
    held_entitlements, wallets, datasets = _holdings(principal)
    form = form or _token_pack_form(principal, _held(datasets), from_request=False)
    return render_template("billing/holdings.html", entitlements=held_entitlements,
                           wallets=wallets, datasets=datasets, form=form,
                           dataset_title=dataset_title), status


@storefront.get("/holdings")
@signed_in("billing:read")
def holdings(principal: Principal):
    return _render_holdings(principal)


@storefront.post("/holdings/token-packs")
@signed_in("billing:write")
def buy_token_pack(principal: Principal):
    # The choices shown again should the order be refused: the held datasets, and the one the
    # dataset page posted (the service decides whether it sells tokens).
    held = _held(_holdings(principal)[2])
    posted = request.form.get("dataset_id", "")
    if posted.isdigit() and all(d.id != int(posted) for d in held):
        dataset = db_session().get(Dataset, int(posted))
        held += [dataset] if dataset is not None else []
    form = _token_pack_form(principal, held, from_request=True)
    if form.validate_on_submit():
        try:
            order = orders.place_token_pack_order(
                db_session(), principal, millions=form.millions.data,
                dataset_id=form.dataset_id.data, payment_method=form.payment_method.data,
                platform_price_per_million=billing_settings().token_pack_price_per_million,
                budget_line_id=form.budget_line_id.data,
                purchase_order_number=form.purchase_order_number.data)
        except (InvalidInput, Conflict, NotFound) as exc:
            form_error(form, exc)
        else:
            flash(_("Order %(number)s placed.", number=order.number), "success")
            for warning in order.budget_warnings:
                flash(warning, "warning")
            return redirect(url_for("storefront.order_page", order_id=order.id))
    return _render_holdings(principal, form, 422)


# Finance ----------------------------------------------------------------------------------------

RECEIPT_FIELDS = {"amount.currency": "currency"}


def _receipt_form(invoice_id: int, *, from_request: bool) -> ReceiptForm:
    extra = {} if from_request else {"formdata": None}
    return ReceiptForm(prefix=f"invoice-{invoice_id}", **extra)


def _render_finance(principal: Principal, *, failed: tuple[int, ReceiptForm] | None = None,
                    lookup: ReferenceLookupForm | None = None, found=None, status=200):
    open_invoices = invoices.open_invoices(db_session(), principal).all()
    forms = {}
    for invoice in open_invoices:
        if failed is not None and failed[0] == invoice.id:
            forms[invoice.id] = failed[1]
        else:
            form = _receipt_form(invoice.id, from_request=False)
            form.currency.data = invoice.currency
            forms[invoice.id] = form
    buyer_ids = {invoice.organization_id for invoice in open_invoices}
    buyers = {org.id: org.name for org in db_session().scalars(
        select(Organization).where(Organization.id.in_(buyer_ids)))} if buyer_ids else {}
    return render_template("billing/finance.html", invoices=open_invoices, forms=forms,
                           buyers=buyers, lookup=lookup or ReferenceLookupForm(formdata=None),
                           found=found,
                           pending=bank_transfer.pending_receipts(db_session(), principal).all(),
                           decision_form=ActionForm(formdata=None)), status


@storefront.get("/finance")
@signed_in("payments:manage")
def finance(principal: Principal):
    lookup = ReferenceLookupForm(formdata=request.args or None)
    found = None
    status = 200
    if request.args and lookup.validate():
        try:
            found = invoices.find_invoice_by_reference(db_session(), principal,
                                                       lookup.payment_reference.data)
        except (InvalidInput, NotFound) as exc:
            form_error(lookup, exc)
            status = 404 if isinstance(exc, NotFound) else 422
    return _render_finance(principal, lookup=lookup, found=found, status=status)


@storefront.post("/finance/invoices/<int:invoice_id>/receipts")
@signed_in("payments:manage")
def record_receipt(principal: Principal, invoice_id: int):
    session_ = db_session()
    invoice = invoices.get_invoice(session_, principal, invoice_id, as_finance=True,
                                   for_update=True)
    form = _receipt_form(invoice.id, from_request=True)
    if form.validate_on_submit():
        try:
            bank_transfer.record_bank_receipt(
                session_, principal, invoice,
                amount=Money(form.amount.data, form.currency.data.strip().upper()),
                received_on=form.received_on.data,
                bank_reference=form.bank_reference.data or "", settings=billing_settings())
        except (InvalidInput, Conflict) as exc:
            form_error(form, exc, RECEIPT_FIELDS)
        except PricingError as exc:  # an unknown currency code
            form.currency.errors = list(form.currency.errors) + [str(exc)]
        else:
            if invoice.status == InvoiceStatus.PAID:
                message = _("Receipt recorded: invoice %(number)s is paid.",
                            number=invoice.number)
            elif invoice.status == InvoiceStatus.PARTIALLY_PAID:
                message = _("Receipt recorded: invoice %(number)s is partly paid, and the rest "
                            "is still due.", number=invoice.number)
            else:
                message = _("Receipt recorded on invoice %(number)s.", number=invoice.number)
            flash(message, "success")
            return redirect(url_for("storefront.finance"))
    return _render_finance(principal, failed=(invoice.id, form), status=422)


@storefront.post("/finance/receipts/<int:receipt_id>/<any(confirm, reject):decision>")
@signed_in("payments:manage")
def decide_receipt(principal: Principal, receipt_id: int, decision: str):
    """The checker's buttons for a receipt awaiting a second person."""
    session_ = db_session()
    if not ActionForm().validate_on_submit():
        abort(400)
    receipt = bank_transfer.get_receipt_for_finance(session_, principal, receipt_id)
    note = (request.form.get("note") or "").strip()
    try:
        if decision == "confirm":
            bank_transfer.confirm_bank_receipt(session_, principal, receipt,
                                               settings=billing_settings(), note=note)
        else:
            bank_transfer.reject_bank_receipt(session_, principal, receipt, note=note)
    except (InvalidInput, Conflict, Forbidden) as exc:
        session_.expire(receipt)
        flash(exc.detail, "error")
        return _render_finance(principal, status=exc.status)
    flash(_("Receipt %(reference)s confirmed and posted.", reference=receipt.bank_reference)
          if decision == "confirm" else
          _("Receipt %(reference)s rejected.", reference=receipt.bank_reference), "success")
    return redirect(url_for("storefront.finance"))


def _finance_order(principal: Principal, order_id: int) -> Order:
    session_ = db_session()
    order = session_.get(Order, order_id)
    if order is None:
        raise NotFound("No such order.")
    finance_may_act(session_, principal, order)
    return order


def _render_finance_order(principal: Principal, order: Order,
                          failed: tuple[int, RefundForm] | None = None, status=200):
    forms = {p.id: (failed[1] if failed and failed[0] == p.id else
                    RefundForm(prefix=f"payment-{p.id}", formdata=None))
             for p in order.payments}
    return render_template("billing/finance_order.html", order=order, forms=forms,
                           buyer=db_session().get(Organization, order.organization_id)), status


@storefront.get("/finance/orders/<int:order_id>")
@signed_in("payments:manage")
def finance_order(principal: Principal, order_id: int):
    return _render_finance_order(principal, _finance_order(principal, order_id))


@storefront.post("/finance/payments/<int:payment_id>/refunds")
@signed_in("payments:manage")
def refund_payment(principal: Principal, payment_id: int):
    payment = get_payment_for_finance(db_session(), principal, payment_id)
    order_id = payment.order_id
    form = RefundForm(prefix=f"payment-{payment.id}")
    if form.validate_on_submit():
        amount = (Money(Decimal(form.amount.data), payment.currency)
                  if form.amount.data is not None else None)
        end_request_transaction()  # the refund runs its own units around the gateway call
        try:
            refund = refunds.refund_payment(_db(), gateway(), principal, payment_id,
                                            amount=amount, reason=form.reason.data,
                                            bank_reference=form.bank_reference.data or None)
        except (InvalidInput, Conflict) as exc:
            form_error(form, exc)
        else:
            amount = format_money(refund.amount_minor, refund.currency)
            if refund.status == RefundStatus.SUCCEEDED:
                flash(_("Refund of %(amount)s made.", amount=amount), "success")
            elif refund.status == RefundStatus.PENDING:
                flash(_("Refund of %(amount)s recorded; it completes when the money has gone "
                        "back.", amount=amount), "success")
            else:
                flash(_("Refund of %(amount)s failed; nothing was refunded.", amount=amount),
                      "error")
            return redirect(url_for("storefront.finance_order", order_id=order_id))
    order = _finance_order(principal, order_id)
    return _render_finance_order(principal, order, failed=(payment_id, form), status=422)
