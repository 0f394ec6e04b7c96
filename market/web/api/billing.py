"""API: buying — checkout, token packs, payments by card or bank transfer, refunds, what was
bought (entitlements, wallets, downloads, certificates)."""

from __future__ import annotations


from flask import Response, current_app, stream_with_context, url_for
from sqlalchemy import select

from market.accounts.authz import Principal
from market.web.api.billing_schemas import (
    BankReceiptSchema, CardSetupSchema, CertificateSchema, CheckoutSchema, HoldingsSchema,
    InvoiceSchema, OrderSchema, PayResultSchema, PaymentAnomalySchema, PaymentProfileSchema,
    PaySchema, ReceiptDecisionSchema, ReceiptSchema, RefundDetailSchema, RefundRequestSchema,
    RefundSchema, SaveCardSchema, TokenPackSchema, VerificationSchema,
    VerifyQuerySchema,
)
from market.web.api.blueprint import api
from market.web.api.endpoint import Created
from market.web.api.pagination import PageQuerySchema, page_request, page_schema
from market.catalog import importer
from market.catalog.models import DatasetVersion
from market.core.errors import Forbidden, NotFound
from market.web.http import (
    billing_settings, db_session, end_request_transaction, gateway, viewer_organization_ids,
)
from billing import certificates, entitlements, finance, invoices, orders
from billing.payments import anomalies, bank_transfer, card as payments, refunds
from billing.models import Certificate, OrderLine, PaymentStatus
from pricing.money import Money

BUYING = ["Buying"]
FINANCE = ["Finance"]


def _db():
    return current_app.extensions["market.db"]


@api.operation("/orders", "POST", summary="Check out a cart of data packages",
               permission="billing:write", body=CheckoutSchema, response=OrderSchema,
               status=201, tags=BUYING, errors=(404, 409, 422))
def checkout(principal: Principal, body: dict):
    """Prices every package now (terms, tax and supply chain are kept on the order); pay it
    with ``POST /orders/{id}/pay``. Tax follows the organization's verified tax status; a
    ``buyer_tax_status`` in the body is refused (422)."""
    items = [orders.CartItem(**item) for item in body["items"]]
    order = orders.place_mall_order(db_session(), principal, items,
                                    payment_method=body["payment_method"],
                                    note=body["note"],
                                    budget_line_id=body["budget_line_id"],
                                    purchase_order_number=body["purchase_order_number"])
    return Created(order, url_for("api.get_order", order_id=order.id))


@api.operation("/token-packs", "POST", summary="Buy prepaid API tokens",
               permission="billing:write", body=TokenPackSchema, response=OrderSchema,
               status=201, tags=BUYING, errors=(404, 409, 422))
def buy_token_pack(principal: Principal, body: dict):
    """N million tokens for one dataset (its metered price) or any dataset (the platform's
    price); credited to the wallet when paid."""
    order = orders.place_token_pack_order(
        db_session(), principal, millions=body["millions"], dataset_id=body["dataset_id"],
        payment_method=body["payment_method"],
        platform_price_per_million=billing_settings().token_pack_price_per_million,
        budget_line_id=body["budget_line_id"],
        purchase_order_number=body["purchase_order_number"])
    return Created(order, url_for("api.get_order", order_id=order.id))


@api.operation("/orders", "GET", summary="The organization's orders", permission="billing:read",
               query=PageQuerySchema, response=page_schema(OrderSchema), tags=BUYING)
def list_orders(principal: Principal, query: dict):
    """Newest first."""
    return orders.list_orders(db_session(), principal).page(page_request(query))


@api.operation("/orders/<int:order_id>", "GET", summary="An order", permission="billing:read",
               response=OrderSchema, tags=BUYING, errors=(404,))
def get_order(principal: Principal, order_id: int):
    return orders.get_order(db_session(), principal, order_id)


@api.operation("/orders/<int:order_id>/cancel", "POST", summary="Cancel an unpaid order",
               permission="billing:write", response=OrderSchema, tags=BUYING,
               errors=(404, 409))
def cancel_order(principal: Principal, order_id: int):
    session = db_session()
    order = orders.get_order(session, principal, order_id, for_update=True)
    return orders.cancel_order(session, principal, order)


@api.operation("/orders/<int:order_id>/pay", "POST", summary="Pay an order",
               permission="billing:write", body=PaySchema, response=PayResultSchema,
               tags=BUYING, errors=(404, 409, 422, 502))
def pay_order(principal: Principal, order_id: int, body: dict):
    """``bank_transfer``: issues the invoice with its payment reference. ``card``: charges the
    saved card (or the one sent) through the payment processor; a card that needs 3-D Secure
    answers ``requires_action`` with a ``client_secret`` for Stripe.js, and the order is paid
    when the processor confirms. Paying a paid order, or one with a payment in flight, is 409."""
    session = db_session()
    order = orders.get_order(session, principal, order_id)
    if body["method"] == "bank_transfer":
        order = orders.get_order(session, principal, order_id, for_update=True)
        invoice = invoices.issue_invoice(session, order, billing_settings(), principal.actor)
        return {"order": order, "payment": None, "invoice": invoice, "client_secret": None}
    end_request_transaction()  # the card payment runs its own units around the gateway call
    payment = payments.pay_by_card(_db(), gateway(), billing_settings(), order_id,
                                   principal=principal, payment_method_ref=body["payment_method"])
    client_secret = None
    if payment.status == PaymentStatus.REQUIRES_ACTION:
        client_secret = gateway().retrieve_payment_intent(payment.gateway_ref).client_secret
    session = db_session()
    return {"order": orders.get_order(session, principal, order_id),
            "payment": payment, "invoice": None, "client_secret": client_secret}


@api.operation("/invoices/<int:invoice_id>", "GET", summary="An invoice",
               permission="billing:read", response=InvoiceSchema, tags=BUYING, errors=(404,))
def get_invoice(principal: Principal, invoice_id: int):
    return invoices.get_invoice(db_session(), principal, invoice_id)


@api.operation("/payment-methods/setup", "POST", summary="Start saving a card",
               permission="billing:write", response=CardSetupSchema, tags=BUYING,
               errors=(409,))
def setup_card(principal: Principal):
    """A SetupIntent whose client secret Stripe.js confirms in the browser; then send the
    payment method to ``POST /payment-methods``."""
    end_request_transaction()  # the customer and the intent are made at the gateway first
    setup = payments.start_card_setup(_db(), gateway(), principal)
    return {"setup_intent": setup.ref, "client_secret": setup.client_secret,
            "publishable_key": current_app.config["STRIPE_PUBLISHABLE_KEY"]}


@api.operation("/payment-methods", "POST", summary="Save a card for later payments",
               permission="billing:write", body=SaveCardSchema, response=PaymentProfileSchema,
               tags=BUYING, errors=(409, 422))
def save_card(principal: Principal, body: dict):
    end_request_transaction()
    return payments.save_card(_db(), gateway(), principal, body["payment_method"])


@api.operation("/holdings", "GET", summary="What the organization holds: entitlements and "
               "token wallets", permission="billing:read", response=HoldingsSchema,
               tags=BUYING)
def holdings(principal: Principal):
    session = db_session()
    return {"entitlements": entitlements.list_entitlements(session, principal.organization_id),
            "wallets": entitlements.list_wallets(session, principal.organization_id)}


def _own_line(principal: Principal, order_id: int, line_id: int) -> OrderLine:
    session = db_session()
    order = orders.get_order(session, principal, order_id)
    line = session.get(OrderLine, line_id)
    if line is None or line.order_id != order.id:
        raise NotFound("No such order line.")
    return line


@api.operation("/orders/<int:order_id>/lines/<int:line_id>/download", "GET",
               summary="Download a bought dataset version", permission="billing:read",
               tags=BUYING, errors=(403, 404), raw_response="application/x-ndjson")
def download(principal: Principal, order_id: int, line_id: int):
    """Streamed canonical JSONL; its SHA-256 equals the version's ``content_sha256`` (sent as
    ``X-Content-SHA256``). Needs a live download entitlement (403 after a refund or when the
    licence has ended)."""
    line = _own_line(principal, order_id, line_id)
    if line.version_id is None:
        raise NotFound("This line has nothing to download.")
    session = db_session()
    if entitlements.active_entitlement(session, principal.organization_id, line.dataset_id,
                                       kind="download", version_id=line.version_id) is None:
        raise Forbidden("The organization holds no current download right to this version "
                        "(refunded, or the licence has ended).", field="entitlement")
    version = session.get(DatasetVersion, line.version_id)
    version_id, sha = version.id, version.content_sha256
    filename = f"dataset-{version.dataset_id}-v{version.number}.jsonl"
    stream_session = _db().session()  # outlives the request's session

    def generate():
        try:
            yield from importer.export_lines(stream_session,
                                             stream_session.get(DatasetVersion, version_id))
        finally:
            stream_session.close()

    response = Response(stream_with_context(generate()), mimetype="application/x-ndjson")
    response.headers["X-Content-SHA256"] = sha
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@api.operation("/orders/<int:order_id>/lines/<int:line_id>/certificate", "GET",
               summary="The transaction certificate of a bought line",
               permission="billing:read", response=CertificateSchema, tags=BUYING,
               errors=(404,))
def line_certificate(principal: Principal, order_id: int, line_id: int):
    line = _own_line(principal, order_id, line_id)
    certificate = db_session().scalar(select(Certificate).where(
        Certificate.order_line_id == line.id))
    if certificate is None:
        raise NotFound("No certificate: the line is not paid yet.")
    return certificate


@api.operation("/certificates/<string:number>", "GET", summary="Verify a transaction "
               "certificate", permission=None, query=VerifyQuerySchema,
               response=VerificationSchema, tags=BUYING)
def verify_certificate(number: str, query: dict):
    """Public: anyone holding a certificate can check it is genuine and unaltered (send the
    digest printed on the copy to compare it too). The parties' names, the order and what was
    bought are shown only to the buyer and the seller (their people or keys); anyone else sees
    the proof alone."""
    return certificates.verify(db_session(), number, billing_settings().certificate_key,
                               presented_digest=query["digest"],
                               viewer_organization_ids=viewer_organization_ids())


# Finance ----------------------------------------------------------------------------------------

@api.operation("/finance/invoices", "GET", summary="Invoices awaiting bank transfers",
               permission="payments:manage", query=PageQuerySchema,
               response=page_schema(InvoiceSchema), tags=FINANCE)
def finance_invoices(principal: Principal, query: dict):
    """The soonest due first."""
    return invoices.open_invoices(db_session(), principal).page(page_request(query))


@api.operation("/invoices/<int:invoice_id>/receipts", "POST",
               summary="Record money received by bank transfer", permission="payments:manage",
               body=ReceiptSchema, response=InvoiceSchema, tags=FINANCE,
               errors=(404, 409, 422))
def record_receipt(principal: Principal, invoice_id: int, body: dict):
    """Once the invoice is covered its order is paid, split and fulfilled; more than was due
    stays as the buyer's credit; less leaves the invoice partly paid."""
    session = db_session()
    invoice = invoices.get_invoice(session, principal, invoice_id, as_finance=True,
                                   for_update=True)
    amount = Money(body["amount"]["amount"], body["amount"]["currency"])
    bank_transfer.record_bank_receipt(session, principal, invoice, amount=amount,
                                      received_on=body["received_on"],
                                      bank_reference=body["bank_reference"], settings=billing_settings())
    return invoice


@api.operation("/finance/receipts", "GET", summary="Bank receipts awaiting a second person",
               permission="payments:manage", query=PageQuerySchema,
               response=page_schema(BankReceiptSchema), tags=FINANCE)
def finance_pending_receipts(principal: Principal, query: dict):
    """Oldest first."""
    return bank_transfer.pending_receipts(db_session(), principal).page(page_request(query))


@api.operation("/receipts/<int:receipt_id>/confirm", "POST", summary="Confirm a bank receipt "
               "awaiting approval (checker)", permission="payments:manage",
               body=ReceiptDecisionSchema, response=BankReceiptSchema, tags=FINANCE,
               errors=(403, 404, 409, 422))
def confirm_receipt(principal: Principal, receipt_id: int, body: dict):
    """Posts it as a receipt under the threshold is posted at once. 403 for the person who
    recorded it, a colleague of the same team and rank, and any party to the order."""
    session = db_session()
    receipt = bank_transfer.get_receipt_for_finance(session, principal, receipt_id)
    return bank_transfer.confirm_bank_receipt(session, principal, receipt, settings=billing_settings(),
                                              note=body["note"])


@api.operation("/receipts/<int:receipt_id>/reject", "POST", summary="Reject a bank receipt "
               "awaiting approval (checker)", permission="payments:manage",
               body=ReceiptDecisionSchema, response=BankReceiptSchema, tags=FINANCE,
               errors=(403, 404, 409, 422))
def reject_receipt(principal: Principal, receipt_id: int, body: dict):
    """Nothing is posted; its bank reference may be recorded again, corrected."""
    session = db_session()
    receipt = bank_transfer.get_receipt_for_finance(session, principal, receipt_id)
    return bank_transfer.reject_bank_receipt(session, principal, receipt, note=body["note"])


@api.operation("/payments/<int:payment_id>/refunds", "POST", summary="Refund a payment",
               permission="payments:manage", body=RefundRequestSchema, response=RefundSchema,
               status=201, tags=FINANCE, errors=(404, 409, 422, 502))
def refund_payment(principal: Principal, payment_id: int, body: dict):
    """Full (no amount) or partial; never more than remains (422). The split is reversed as
    its exact mirror; a full refund ends what the order granted."""
    amount = body["amount"]
    money = Money(amount["amount"], amount["currency"]) if amount else None
    finance.get_payment_for_finance(db_session(), principal, payment_id)
    end_request_transaction()
    refund = refunds.refund_payment(_db(), gateway(), principal, payment_id, amount=money,
                                    reason=body["reason"], bank_reference=body["bank_reference"])
    return refund


@api.operation("/refunds/<int:refund_id>/retry", "POST", summary="Try a pending card refund "
               "again, asking the processor first", permission="payments:manage",
               response=RefundDetailSchema, tags=FINANCE, errors=(404, 409, 502))
def retry_refund(principal: Principal, refund_id: int):
    """For a refund the processor did not answer: it is asked for the refund first and only a
    refund it has no trace of is sent again, so a lost answer never refunds twice. A refund no
    longer pending is returned as it is."""
    refunds.get_refund_for_finance(db_session(), principal, refund_id)
    end_request_transaction()
    return refunds.retry_refund(_db(), gateway(), principal, refund_id)


@api.operation("/finance/payment-anomalies", "GET", summary="What the payment processor "
               "reported that does not match what we asked for", permission="payments:manage",
               query=PageQuerySchema, response=page_schema(PaymentAnomalySchema), tags=FINANCE,
               errors=(403,))
def payment_anomalies(principal: Principal, query: dict):
    """Intents we did not create naming our payments, amounts that differ, refunds made
    outside the marketplace that cannot be booked: newest first, never applied. The
    platform's staff only (an exchange: 403)."""
    return anomalies.list_anomalies(db_session(), principal).page(page_request(query))
