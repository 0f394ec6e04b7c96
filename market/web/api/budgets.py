"""API: budgets (数据采买纳入预算编制) — budgets and their lines, amendments, and the records
that purchases leave on a line (the drill-down behind every figure)."""

from __future__ import annotations

from flask import current_app, url_for

from billing.budgets import alerts as budget_alerts, lines as budgets, webhook_targets
from market.accounts.authz import Principal
from market.web.api.blueprint import api
from market.web.api.budget_schemas import (
    AlertWebhookSchema, AlertWebhookSetSchema, AmendmentCreateSchema, AmendmentResultSchema,
    BudgetCreateSchema, BudgetLineCreateSchema,
    BudgetLineSchema, LineRecordSchema, BudgetSchema, LineRecordQuerySchema,
)
from market.web.api.endpoint import Created
from market.web.api.pagination import PageQuerySchema, page_request, page_schema
from market.web.http import db_session
from pricing.money import Money

BUDGETS = ["Budgets"]


@api.operation("/budgets", "POST", summary="Set up a budget for a fiscal year",
               permission="budgets:manage", body=BudgetCreateSchema, response=BudgetSchema,
               status=201, tags=BUDGETS, errors=(409, 422))
def create_budget(principal: Principal, body: dict):
    """One per organization, fiscal year and currency; the currency must be one the
    organization buys in."""
    budget = budgets.create_budget(db_session(), principal, **body)
    return Created(budget, url_for("api.get_budget", budget_id=budget.id))


@api.operation("/budgets", "GET", summary="The organization's budgets",
               permission="billing:read", query=PageQuerySchema,
               response=page_schema(BudgetSchema), tags=BUDGETS)
def list_budgets(principal: Principal, query: dict):
    """The latest fiscal year first."""
    return budgets.list_budgets(db_session(), principal).page(page_request(query))


@api.operation("/budgets/<int:budget_id>", "GET", summary="A budget with its lines",
               permission="billing:read", response=BudgetSchema, tags=BUDGETS, errors=(404,))
def get_budget(principal: Principal, budget_id: int):
    return budgets.get_budget(db_session(), principal, budget_id)


@api.operation("/budgets/<int:budget_id>/lines", "POST", summary="Add a line to a budget",
               permission="budgets:manage", body=BudgetLineCreateSchema,
               response=BudgetLineSchema, status=201, tags=BUDGETS, errors=(404, 409, 422))
def add_budget_line(principal: Principal, budget_id: int, body: dict):
    session = db_session()
    budget = budgets.get_budget(session, principal, budget_id)
    approved = body.pop("approved")
    line = budgets.add_line(session, principal, budget,
                            approved=Money(approved["amount"], approved["currency"]), **body)
    return Created(line, url_for("api.get_budget", budget_id=budget.id))


@api.operation("/budget-lines/<int:budget_line_id>/amendments", "POST",
               summary="Increase, decrease or transfer a line's approved amount",
               permission="budgets:manage", body=AmendmentCreateSchema,
               response=AmendmentResultSchema, status=201, tags=BUDGETS,
               errors=(404, 422))
def amend_budget_line(principal: Principal, budget_line_id: int, body: dict):
    """A decrease or transfer never takes a line below what it has committed and spent
    (422 naming the shortfall). The line's approved amount is always its original amount plus
    its amendments."""
    session = db_session()
    line = budgets.get_line(session, principal, budget_line_id)
    to_line = (budgets.get_line(session, principal, body["to_line_id"], field="to_line_id")
               if body["to_line_id"] is not None else None)
    amount = Money(body["amount"]["amount"], body["amount"]["currency"])
    made = budgets.amend(session, principal, line, kind=body["kind"], amount=amount,
                         reason=body["reason"], to_line=to_line)
    return Created({"line": line, "to_line": to_line, "amendments": made},
                   url_for("api.budget_line_records", budget_line_id=line.id))


@api.operation("/budget-lines/<int:budget_line_id>/records", "GET",
               summary="The records behind a budget line's figures",
               permission="billing:read", query=LineRecordQuerySchema,
               response=page_schema(LineRecordSchema), tags=BUDGETS, errors=(404,))
def budget_line_records(principal: Principal, budget_line_id: int, query: dict):
    """Commitments, releases, expenditure and refunds, newest first; filter by kind, month
    (YYYY-MM), dataset, supplier or sector."""
    records = budgets.line_records(
        db_session(), principal, budget_line_id, kind=query["kind"], month=query["month"],
        dataset_id=query["dataset_id"], supplier_id=query["supplier_id"], sector=query["sector"])
    return records.page(page_request(query))


def _webhook(budget, secret: str | None = None) -> dict:
    return {"url": budget.webhook_url, "secret": secret,
            "secret_created_at": budget.webhook_secret_created_at}


def _new_secret(step, principal: Principal, budget_id: int, *args, **kwargs) -> dict:
    """Change the budget's webhook by a step that answers its signing secret when it made one,
    and answer the webhook with that secret (shown this once)."""
    session = db_session()
    budget = budgets.get_budget(session, principal, budget_id)
    return _webhook(budget, step(session, principal, budget, *args, **kwargs))


@api.operation("/budgets/<int:budget_id>/alert-webhook", "PUT",
               summary="Send the budget's threshold alerts to a webhook",
               permission="budgets:manage", body=AlertWebhookSetSchema,
               response=AlertWebhookSchema, tags=BUDGETS, errors=(404, 422))
def set_alert_webhook(principal: Principal, budget_id: int, body: dict):
    """The marketplace generates the signing secret the first time and answers it once
    (``secret``); later calls keep it (rotate it with ``.../rotate-secret``). Private and
    loopback addresses are refused in production (422 naming ``url``)."""
    return _new_secret(budget_alerts.set_webhook, principal, budget_id, body["url"],
                       production=webhook_targets.is_production(current_app.config))


@api.operation("/budgets/<int:budget_id>/alert-webhook/rotate-secret", "POST",
               summary="A new signing secret for the budget's webhook",
               permission="budgets:manage", response=AlertWebhookSchema, tags=BUDGETS,
               errors=(404, 409))
def rotate_alert_webhook_secret(principal: Principal, budget_id: int):
    """Answered once; the old secret stops signing at once."""
    return _new_secret(budget_alerts.rotate_webhook_secret, principal, budget_id)


@api.operation("/budgets/<int:budget_id>/alert-webhook", "DELETE",
               summary="Stop sending the budget's alerts to a webhook",
               permission="budgets:manage", response=AlertWebhookSchema, tags=BUDGETS,
               errors=(404, 409))
def remove_alert_webhook(principal: Principal, budget_id: int):
    session = db_session()
    budget = budgets.get_budget(session, principal, budget_id)
    return _webhook(budget_alerts.remove_webhook(session, principal, budget))
