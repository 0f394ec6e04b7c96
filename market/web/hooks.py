"""Callbacks from outside services: the payment gateway's webhook.

The view only verifies the signature on the raw body and hands the event, a plain dict, to
``billing.payments.webhooks.handle_event``; the request's unit of work commits the event id together with
its effects. A bad signature is 400 and records nothing.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from billing.payments.gateway import InvalidSignature
from billing.payments.webhooks import handle_event
from market.web.http import billing_settings, db_session, gateway, problem

hooks = Blueprint("hooks", __name__, url_prefix="/webhooks")


@hooks.post("/stripe")
def stripe_webhook():
    processor = gateway()
    if processor is None:
        return problem(404, "Not found", "Card payments are not enabled here.")
    try:
        event = processor.parse_webhook(request.get_data(cache=False),
                                        request.headers.get("Stripe-Signature", ""))
    except InvalidSignature as exc:
        return problem(400, "Bad signature", f"The event's signature does not verify: {exc}",
                       {"Stripe-Signature": [str(exc)]})
    outcome = handle_event(db_session(), event, billing_settings())
    return jsonify({"received": event["id"], "outcome": outcome})
