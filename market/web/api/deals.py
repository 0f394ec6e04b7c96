"""API: custom deals (定制模式) — demands, quotes, deals, delivery and its acceptance."""

from __future__ import annotations

from flask import url_for

from market.accounts.authz import Principal
from market.web.api.blueprint import api
from market.web.api.deal_schemas import (
    DealQuoteSchema, DealSchema, DeliveryAcceptSchema, DeliverySchema, DemandCancelSchema,
    DemandDetailSchema, DemandQuerySchema, DemandSchema, DemandWriteSchema, DisputeSchema,
    QuoteAcceptSchema, QuoteWithdrawSchema, QuoteWriteSchema,
)
from market.web.api.endpoint import Created
from market.web.api.pagination import page_request, page_schema
from market.core.errors import Forbidden
from market.web.http import db_session
from billing import deals

DEALS = ["Custom deals"]


@api.operation("/demands", "POST", summary="Post a demand for custom data",
               permission="billing:write", body=DemandWriteSchema, response=DemandSchema,
               status=201, tags=DEALS, errors=(422,))
def post_demand(principal: Principal, body: dict):
    demand = deals.post_demand(db_session(), principal, body)
    return Created(demand, url_for("api.get_demand", demand_id=demand.id))


@api.operation("/demands", "GET", summary="The organization's demands, or open ones to quote on",
               permission="billing:read", query=DemandQuerySchema,
               response=page_schema(DemandSchema), tags=DEALS, errors=(403,))
def list_demands(principal: Principal, query: dict):
    """``role=buyer`` (default): the organization's own demands, newest first.
    ``role=supplier``: open demands of other organizations, the nearest deadline first, for
    suppliers and processors (``deals:supply``)."""
    session = db_session()
    if query["role"] == "buyer":
        return deals.list_own_demands(session, principal).page(page_request(query))
    if not principal.can("deals:supply"):
        raise Forbidden("This needs the 'deals:supply' permission.")
    return deals.list_open_demands(session, principal, sector=query["sector"],
                                   modality=query["modality"]).page(page_request(query))


@api.operation("/demands/<int:demand_id>", "GET", summary="A demand and its quotes",
               permission="billing:read", response=DemandDetailSchema, tags=DEALS,
               errors=(404,))
def get_demand(principal: Principal, demand_id: int):
    """For its buyer (with every quote); for suppliers while it is open, and for those that
    quoted on it (with their own quote only)."""
    demand = deals.get_demand(db_session(), principal, demand_id)
    return {"demand": demand, "quotes": deals.visible_quotes(demand, principal)}


@api.operation("/demands/<int:demand_id>/cancel", "POST", summary="Cancel a demand",
               permission="billing:write", body=DemandCancelSchema,
               response=DemandDetailSchema, tags=DEALS, errors=(403, 404, 409, 422))
def cancel_demand(principal: Principal, demand_id: int, body: dict):
    """Only while it is open (no quote accepted), by the buyer that posted it, with a reason.
    Every quote still submitted is declined. A cancel racing an accept: one of them gets 409."""
    session = db_session()
    demand = deals.get_demand(session, principal, demand_id, for_update=True)
    deals.cancel_demand(session, principal, demand, reason=body["reason"])
    return {"demand": demand, "quotes": deals.visible_quotes(demand, principal)}


@api.operation("/demands/<int:demand_id>/quotes", "POST", summary="Quote on a demand",
               permission="deals:supply", body=QuoteWriteSchema, response=DealQuoteSchema,
               status=201, tags=DEALS, errors=(404, 409, 422))
def submit_quote(principal: Principal, demand_id: int, body: dict):
    """One quote per organization and demand. Milestones end with the acceptance payment;
    criteria default to the demand's thresholds and may only be stricter."""
    session = db_session()
    demand = deals.get_demand(session, principal, demand_id)
    quote = deals.submit_quote(session, principal, demand, body)
    return Created(quote, url_for("api.get_demand", demand_id=demand.id))


@api.operation("/quotes/<int:quote_id>/accept", "POST", summary="Accept a quote",
               permission="billing:write", body=QuoteAcceptSchema, response=DealSchema,
               status=201, tags=DEALS, errors=(404, 409))
def accept_quote(principal: Principal, quote_id: int, body: dict):
    """Creates the deal and one order per milestone; the deposit is payable at once and the
    other quotes are declined. A second accept answers 409."""
    session = db_session()
    quote = deals.get_quote_for_buyer(session, principal, quote_id)
    deal = deals.accept_quote(session, principal, quote, payment_method=body["payment_method"])
    return Created(deals.deal_summary(session, deal), url_for("api.get_deal", deal_id=deal.id))


@api.operation("/quotes/<int:quote_id>/withdraw", "POST", summary="Withdraw a quote",
               permission="deals:supply", body=QuoteWithdrawSchema, response=DealQuoteSchema,
               tags=DEALS, errors=(403, 404, 409, 422))
def withdraw_quote(principal: Principal, quote_id: int, body: dict):
    """By the supplier that sent it, while the buyer has not decided on it (submitted, on an
    open demand). A withdrawn quote cannot be accepted; the reason is optional."""
    session = db_session()
    quote = deals.get_quote(session, principal, quote_id)
    return deals.withdraw_quote(session, principal, quote, reason=body["reason"])


@api.operation("/deals/<int:deal_id>", "GET", summary="A deal: milestones and acceptance check",
               permission="billing:read", response=DealSchema, tags=DEALS, errors=(404,))
def get_deal(principal: Principal, deal_id: int):
    session = db_session()
    return deals.deal_summary(session, deals.get_deal(session, principal, deal_id))


def _step(step, principal: Principal, deal_id: int, **kwargs):
    """Take one party's step on the deal, locked; answer with the deal as it now is."""
    session = db_session()
    deal = deals.get_deal(session, principal, deal_id, for_update=True)
    step(session, principal, deal, **kwargs)
    return deals.deal_summary(session, deal)


@api.operation("/deals/<int:deal_id>/deliver", "POST", summary="Deliver a version",
               permission="deals:supply", body=DeliverySchema, response=DealSchema,
               tags=DEALS, errors=(403, 404, 409, 422))
def deliver(principal: Principal, deal_id: int, body: dict):
    """Runs the acceptance check (pass or fail per criterion) and makes the delivery
    milestone payable. Needs the deposit paid."""
    return _step(deals.deliver, principal, deal_id, version_number=body["version"])


@api.operation("/deals/<int:deal_id>/accept", "POST", summary="Accept the delivery",
               permission="billing:write", body=DeliveryAcceptSchema, response=DealSchema,
               tags=DEALS, errors=(403, 404, 409))
def accept_delivery(principal: Principal, deal_id: int, body: dict):
    """The final milestone becomes payable. If a criterion failed, send ``waiver_reason`` to
    accept anyway, or dispute instead."""
    return _step(deals.accept_delivery, principal, deal_id, waiver_reason=body["waiver_reason"])


@api.operation("/deals/<int:deal_id>/dispute", "POST", summary="Dispute the deal",
               permission="billing:write", body=DisputeSchema, response=DealSchema,
               tags=DEALS, errors=(403, 404, 409))
def dispute(principal: Principal, deal_id: int, body: dict):
    return _step(deals.dispute, principal, deal_id, reason=body["reason"])
