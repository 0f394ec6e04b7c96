"""API: settlement statements — closing a period, the maker-checker review, disputes and their
resolution, payment, the statement as CSV, XLSX or PDF, and the period's reconciliation.

Exchange and platform staff manage statements (``statements:manage``); a participant reads its
own (``billing:read``). Which statements a principal may see, and which step it may take, is
decided by ``billing.settlement.workflow``; these views only translate.
"""

from __future__ import annotations


from flask import Response, current_app
from marshmallow import Schema, fields, validate

from billing.settlement import checkpoints, compute, exports, reconciliation, workflow
from market.accounts.authz import Principal
from market.web.api.billing_schemas import MoneyField, MoneyInputSchema
from market.web.api.blueprint import api
from market.web.api.pagination import PageQuerySchema, page_request, page_schema
from market.web.boundary import Month
from market.core.db import last_closed_month
from market.web.http import billing_settings, db_session, gateway
from pricing.money import Money

STATEMENTS = ["Statements"]


# Schemas (the use cases of this module only) ------------------------------------------------

class StatementLineSchema(Schema):
    position = fields.Integer()
    kind = fields.String(metadata={"description": "sale, subscription, custom, usage, "
                                                  "royalty, refund, adjustment, payout, other"})
    occurred_on = fields.Date()
    ledger_transaction_id = fields.Integer()
    order_number = fields.String(allow_none=True)
    dataset_id = fields.Integer(allow_none=True)
    description = fields.String()
    gross = fields.Method("_gross", metadata={"description": "What the share was taken from "
                                                             "(the payment or the usage)."})
    amount = fields.Method("_amount", metadata={"description": "Owed to the participant: "
                                                               "positive."})

    # A line's minor units are in its statement's currency.
    def _gross(self, line):
        if line.gross_minor is None:
            return None
        return Money.from_minor(line.gross_minor, line.statement.currency).to_dict()

    def _amount(self, line):
        return Money.from_minor(line.amount_minor, line.statement.currency).to_dict()


class StatementSchema(Schema):
    id = fields.Integer()
    number = fields.String()
    organization_id = fields.Integer()
    exchange_id = fields.Integer(allow_none=True)
    period = fields.String(metadata={"example": "2026-01"})
    period_start = fields.Date()
    period_end = fields.Date(metadata={"description": "Exclusive."})
    cutoff = fields.AwareDateTime()
    status = fields.String(metadata={"description": "draft, issued, under_review, approved, "
                                                    "disputed, paid"})
    opening = MoneyField("opening_minor")
    activity = MoneyField("activity_minor")
    closing = MoneyField("closing_minor", metadata={"description": "What is owed after it."})
    totals = fields.Dict(keys=fields.String(), values=fields.String(),
                         metadata={"description": "Sums by kind of line, decimal strings."})
    content_hash = fields.String(metadata={"description": "SHA-256 of the statement's "
                                                          "content, frozen once approved."})
    generated_at = fields.AwareDateTime()
    review_due_on = fields.Date(allow_none=True)
    issued_at = fields.AwareDateTime(allow_none=True)
    submitted_at = fields.AwareDateTime(allow_none=True)
    approved_by_id = fields.Integer(allow_none=True)
    approved_at = fields.AwareDateTime(allow_none=True)
    disputed_at = fields.AwareDateTime(allow_none=True)
    dispute_reason = fields.String(allow_none=True)
    paid_at = fields.AwareDateTime(allow_none=True)
    payout_method = fields.String(allow_none=True)
    payout_reference = fields.String(allow_none=True)


class AdjustmentSchema(Schema):
    id = fields.Integer()
    statement_id = fields.Integer()
    organization_id = fields.Integer()
    amount = MoneyField("amount_minor", metadata={"description": "Positive: more is owed to "
                                                                 "the participant."})
    reason = fields.String()
    reason_code = fields.String()
    evidence = fields.Dict(metadata={"description": "The statement lines it corrects "
                                                    "(positions) and a document reference."})
    status = fields.String(metadata={"description": "pending_approval, posted, rejected"})
    ledger_transaction_id = fields.Integer(allow_none=True)
    created_by_id = fields.Integer(allow_none=True)
    decided_by_id = fields.Integer(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    decision_note = fields.String()
    created_at = fields.AwareDateTime()


class StatementDetailSchema(StatementSchema):
    lines = fields.List(fields.Nested(StatementLineSchema))
    adjustments = fields.Method("_adjustments", metadata={
        "description": "Corrections made when its disputes were resolved."})

    def _adjustments(self, statement):
        return AdjustmentSchema(many=True).dump(workflow.adjustments_of(statement))


class ClosePeriodSchema(Schema):
    period = Month(required=True, metadata={"example": "2026-01"})


class StatementQuerySchema(PageQuerySchema):
    period = Month(load_default=None)


class ReconciliationQuerySchema(Schema):
    period = Month(load_default=None,
                           metadata={"description": "Default: last month."})


class StatementDisputeSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class EvidenceSchema(Schema):
    lines = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=2**31 - 1)),
                        load_default=list, validate=validate.Length(max=1000),
                        metadata={"description": "Positions of the statement lines the "
                                                 "correction is about; they bound it."})
    document = fields.String(load_default="", validate=validate.Length(max=300),
                             metadata={"description": "Reference of the supporting document."})


class StatementResolveSchema(Schema):
    amount = fields.Nested(MoneyInputSchema, required=True, metadata={
        "description": "The correction, posted as an adjustment in a later period: positive "
                       "when more is owed to the participant. Zero: none."})
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    reason_code = fields.String(load_default="other",
                                validate=validate.OneOf(workflow.ADJUSTMENT_REASON_CODES))
    evidence = fields.Nested(EvidenceSchema, load_default=dict)


class DecisionSchema(Schema):
    note = fields.String(load_default="", validate=validate.Length(max=2000))


class PayStatementSchema(Schema):
    bank_reference = fields.String(required=True, validate=validate.Length(min=1, max=100))


# Views ------------------------------------------------------------------------------------------

@api.operation("/statements/close", "POST", summary="Close a period: a statement per "
               "participant", permission="statements:manage", body=ClosePeriodSchema,
               response=StatementSchema, many=True, status=201, tags=STATEMENTS,
               errors=(409, 422))
def close_statement_period(principal: Principal, body: dict):
    """Computes each participant's statement for the month from the ledger up to the period's
    end, as drafts; closing a period again returns the statements it already has."""
    return workflow.close_period(db_session(), body["period"], actor=principal,
                                 settings=billing_settings())


@api.operation("/statements", "GET", summary="Statements: the review queue, or the "
               "organization's own", permission="billing:read", query=StatementQuerySchema,
               response=page_schema(StatementSchema), tags=STATEMENTS)
def list_statements(principal: Principal, query: dict):
    """Exchange and platform staff see the statements they review, by due date; a participant
    its own, the latest period first."""
    return workflow.list_statements(db_session(), principal,
                                      period=query["period"]).page(page_request(query))


@api.operation("/statements/<int:statement_id>", "GET", summary="A statement with its lines",
               permission="billing:read", response=StatementDetailSchema, tags=STATEMENTS,
               errors=(404,))
def get_statement(principal: Principal, statement_id: int):
    return workflow.get_statement(db_session(), principal, statement_id)


def _step(step, principal: Principal, statement_id: int, *args, **kwargs):
    """Take one step of the statement's review; answer with the statement as it now is."""
    session = db_session()
    statement = workflow.get_statement(session, principal, statement_id)
    step(session, principal, statement, *args, **kwargs)
    return statement


@api.operation("/statements/<int:statement_id>/issue", "POST", summary="Issue a draft "
               "statement to its participant", permission="statements:manage",
               response=StatementSchema, tags=STATEMENTS, errors=(404, 409))
def issue_statement(principal: Principal, statement_id: int):
    return _step(workflow.issue, principal, statement_id)


@api.operation("/statements/<int:statement_id>/review", "POST", summary="Submit a statement "
               "for approval", permission="statements:manage", response=StatementSchema,
               tags=STATEMENTS, errors=(404, 409))
def review_statement(principal: Principal, statement_id: int):
    """The person who submits it (the maker) cannot approve it."""
    return _step(workflow.start_review, principal, statement_id)


@api.operation("/statements/<int:statement_id>/approve", "POST", summary="Approve a "
               "statement (checker)", permission="statements:manage",
               response=StatementSchema, tags=STATEMENTS, errors=(403, 404, 409))
def approve_statement(principal: Principal, statement_id: int):
    """Maker-checker: 403 for the person who generated or submitted it. Approval freezes the
    content hash."""
    return _step(workflow.approve, principal, statement_id)


@api.operation("/statements/<int:statement_id>/dispute", "POST", summary="Dispute a "
               "statement", permission="billing:read", body=StatementDisputeSchema,
               response=StatementSchema, tags=STATEMENTS, errors=(403, 404, 409))
def dispute_statement(principal: Principal, statement_id: int, body: dict):
    return _step(workflow.dispute, principal, statement_id, body["reason"])


@api.operation("/statements/<int:statement_id>/resolve", "POST", summary="Resolve a "
               "dispute with an adjustment", permission="statements:manage", body=StatementResolveSchema,
               response=StatementSchema, tags=STATEMENTS, errors=(404, 409, 422))
def resolve_statement_dispute(principal: Principal, statement_id: int, body: dict):
    """The correction is posted to the ledger and appears on the next period's statement;
    this one is never edited."""
    amount = Money(body["amount"]["amount"], body["amount"]["currency"])
    evidence = body["evidence"]
    return _step(workflow.resolve_dispute, principal, statement_id, amount, body["reason"],
                 reason_code=body["reason_code"], lines=evidence.get("lines", []),
                 document=evidence.get("document", ""),
                 settings=billing_settings())


@api.operation("/adjustments/<int:adjustment_id>/confirm", "POST", summary="Confirm a "
               "statement adjustment awaiting approval (checker)",
               permission="statements:manage", body=DecisionSchema, response=AdjustmentSchema,
               tags=STATEMENTS, errors=(403, 404, 409, 422))
def confirm_adjustment(principal: Principal, adjustment_id: int, body: dict):
    """Posts it. 403 for its maker, for the statement's disputer, for a colleague of the same
    team and rank, and for the statement's own participant."""
    session = db_session()
    adjustment = workflow.get_adjustment(session, principal, adjustment_id)
    return workflow.decide_adjustment(session, principal, adjustment, approve=True,
                                        note=body["note"])


@api.operation("/adjustments/<int:adjustment_id>/reject", "POST", summary="Reject a "
               "statement adjustment awaiting approval (checker)",
               permission="statements:manage", body=DecisionSchema, response=AdjustmentSchema,
               tags=STATEMENTS, errors=(403, 404, 409, 422))
def reject_adjustment(principal: Principal, adjustment_id: int, body: dict):
    """Nothing is posted; the note (required) says why."""
    session = db_session()
    adjustment = workflow.get_adjustment(session, principal, adjustment_id)
    return workflow.decide_adjustment(session, principal, adjustment, approve=False,
                                        note=body["note"])


@api.operation("/statements/<int:statement_id>/pay", "POST", summary="Record an approved "
               "statement as paid", permission="statements:manage", body=PayStatementSchema,
               response=StatementSchema, tags=STATEMENTS, errors=(404, 409, 422))
def pay_statement(principal: Principal, statement_id: int, body: dict):
    return _step(workflow.pay, principal, statement_id, bank_reference=body["bank_reference"])


def _export(principal: Principal, statement_id: int, extension: str) -> Response:
    session = db_session()
    statement = workflow.get_statement(session, principal, statement_id)
    render = {"csv": exports.statement_csv, "xlsx": exports.statement_xlsx,
              "pdf": exports.statement_pdf}[extension]
    body = render(statement, exports.parties_of(session, statement))
    response = Response(body, mimetype=exports.MEDIA_TYPES[extension])
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{exports.statement_filename(statement, extension)}"')
    response.headers["X-Content-Hash"] = statement.content_hash
    return response


@api.operation("/statements/<int:statement_id>/export.csv", "GET", summary="A statement as "
               "CSV", permission="billing:read", tags=STATEMENTS, errors=(404,),
               raw_response=exports.CSV_MEDIA_TYPE)
def export_statement_csv(principal: Principal, statement_id: int):
    """UTF-8 with a byte-order mark; amounts are decimal strings."""
    return _export(principal, statement_id, "csv")


@api.operation("/statements/<int:statement_id>/export.xlsx", "GET", summary="A statement as "
               "an Excel workbook", permission="billing:read", tags=STATEMENTS, errors=(404,),
               raw_response=exports.XLSX_MEDIA_TYPE)
def export_statement_xlsx(principal: Principal, statement_id: int):
    return _export(principal, statement_id, "xlsx")


@api.operation("/statements/<int:statement_id>/export.pdf", "GET", summary="A statement as "
               "PDF", permission="billing:read", tags=STATEMENTS, errors=(404,),
               raw_response=exports.PDF_MEDIA_TYPE)
def export_statement_pdf(principal: Principal, statement_id: int):
    """Bilingual (中文 / English), with the parties and the content hash printed."""
    return _export(principal, statement_id, "pdf")


@api.operation("/statements/<int:statement_id>/export.zip", "GET", summary="A statement with "
               "its signed checkpoint and the platform's public key", permission="billing:read",
               tags=STATEMENTS, errors=(404,), raw_response=exports.ZIP_MEDIA_TYPE)
def export_statement_bundle(principal: Principal, statement_id: int):
    """statement.csv, statement.json (the hashed content), checkpoint.json (signed with the
    platform's Ed25519 key) and platform-key.pem: checkable with tools/verify_checkpoint.py."""
    session = db_session()
    statement = workflow.get_statement(session, principal, statement_id)
    key = checkpoints.signing_key_from_settings(current_app.config).public_key()
    checkpoint = checkpoints.latest_covering(session, statement.number)
    body = exports.statement_bundle(
        statement, exports.parties_of(session, statement), compute.statement_content(statement),
        checkpoints.exported(checkpoint) if checkpoint is not None else None,
        checkpoints.public_key_pem(key))
    response = Response(body, mimetype=exports.ZIP_MEDIA_TYPE)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{exports.statement_filename(statement, "zip")}"')
    response.headers["X-Content-Hash"] = statement.content_hash
    return response


@api.operation("/reconciliation", "GET", summary="A period's money: collected, owed, paid "
               "out, and the difference", permission="statements:manage",
               query=ReconciliationQuerySchema, tags=STATEMENTS, errors=(403, 422, 502))
def statement_reconciliation(principal: Principal, query: dict):
    """Per currency, in minor units, from the ledger over the period's window; ``difference``
    is zero when every movement of money is accounted for. The platform's staff only, since
    it covers every participant (an exchange: 403). A card processor that does not answer is
    a 502 naming it (``processor_unavailable``)."""
    period = query["period"] or last_closed_month(db_session())
    return reconciliation.reconcile(db_session(), period, actor=principal,
                                    gateway=gateway())


def _reconciliation_export(principal: Principal, query: dict, extension: str) -> Response:
    period = query["period"] or last_closed_month(db_session())
    session = db_session()
    figures = reconciliation.reconcile(session, period, actor=principal,
                                       gateway=gateway())
    render = {"csv": exports.reconciliation_csv,
              "xlsx": exports.reconciliation_xlsx}[extension]
    body = render(figures, exports.organization_names(session, figures))
    response = Response(body, mimetype=exports.MEDIA_TYPES[extension])
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{exports.reconciliation_filename(period, extension)}"')
    return response


@api.operation("/reconciliation/export.csv", "GET", summary="A period's reconciliation as CSV",
               permission="statements:manage", query=ReconciliationQuerySchema,
               tags=STATEMENTS, errors=(403, 422, 502),
               raw_response=exports.CSV_MEDIA_TYPE)
def export_reconciliation_csv(principal: Principal, query: dict):
    """Every term of the identity Σ participants + platform revenue + tax + Σ buyer credit
    movement = collected − refunds as one row (with its machine key), then the totals and
    the difference; UTF-8 with a byte-order mark, amounts as decimal strings."""
    return _reconciliation_export(principal, query, "csv")


@api.operation("/reconciliation/export.xlsx", "GET", summary="A period's reconciliation as an "
               "Excel workbook", permission="statements:manage",
               query=ReconciliationQuerySchema, tags=STATEMENTS, errors=(403, 422, 502),
               raw_response=exports.XLSX_MEDIA_TYPE)
def export_reconciliation_xlsx(principal: Principal, query: dict):
    """Sheets ``terms`` and ``summary`` as in the CSV; amounts are numeric cells."""
    return _reconciliation_export(principal, query, "xlsx")
