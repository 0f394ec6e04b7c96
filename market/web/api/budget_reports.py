"""API: budget-execution reports — a budget's figures by line, supplier, sector, dataset or
month, the records behind any figure, and the line report as XLSX or CSV for finance staff."""

from __future__ import annotations

from flask import Response
from marshmallow import Schema, fields, validate

from billing.budgets import reports
from billing.budgets.lines import get_budget
from market.accounts.authz import Principal
from market.web.api.blueprint import api
from market.web.api.budget_schemas import BudgetRecordFieldsSchema
from market.web.api.pagination import PageQuerySchema, PageSchema, page_request
from market.web.boundary import Month
from market.web.http import db_session

BUDGETS = ["Budgets"]
_ID_OR_NONE = validate.Regexp(r"^(\d{1,9}|none)$", error="An id, or `none` for records "
                                                           "without one.")


class BudgetReportQuerySchema(Schema):
    by = fields.String(load_default="line", validate=validate.OneOf(reports.GROUPINGS))


class BudgetRecordsQuerySchema(PageQuerySchema):
    line = fields.String(load_default=None, validate=validate.Regexp(r"^\d{1,9}$"))
    supplier = fields.String(load_default=None, validate=_ID_OR_NONE, metadata={
        "description": "The supplier organization's id; `none`: records without one."})
    sector = fields.String(load_default=None, validate=validate.Length(min=1, max=40),
                           metadata={"description": "A sector code; `none`: without one."})
    dataset = fields.String(load_default=None, validate=_ID_OR_NONE)
    month = Month(load_default=None)


class ReportRowSchema(Schema):
    key = fields.String(metadata={"description": "The drill-down filter's value for this row."})
    label = fields.String()
    label_zh = fields.String()
    code = fields.String(metadata={"description": "Lines only."})
    category = fields.String()
    project = fields.String(allow_none=True)
    approved = fields.String(metadata={"description": "Lines and totals only; a decimal string."})
    committed = fields.String()
    spent = fields.String()
    remaining = fields.String()
    execution_rate = fields.String(allow_none=True, metadata={
        "description": "spent / approved in percent, rounded half-up to 0.01."})
    records = fields.Integer()
    reconciled = fields.Boolean(metadata={
        "description": "Lines only: the records sum to the line's committed and spent."})


class BudgetReportSchema(Schema):
    budget_id = fields.Integer()
    budget_name = fields.String()
    organization = fields.String()
    fiscal_year = fields.Integer()
    currency = fields.String()
    by = fields.String()
    generated_at = fields.String()
    rows = fields.List(fields.Nested(ReportRowSchema))
    totals = fields.Nested(ReportRowSchema)


class BudgetRecordSchema(BudgetRecordFieldsSchema):
    line_code = fields.String(allow_none=True)
    kind = fields.String(metadata={"description": "commitment, release, expenditure or refund"})
    amount = fields.String()
    currency = fields.String()
    occurred_at = fields.String()


class BudgetRecordPageSchema(PageSchema):
    items = fields.List(fields.Nested(BudgetRecordSchema), required=True)
    filters = fields.Dict()
    total = fields.Integer(metadata={"description": "Every matching record, on all pages."})
    committed = fields.String(metadata={"description": "Of every matching record, not the page."})
    spent = fields.String()


@api.operation("/budgets/<int:budget_id>/report", "GET", summary="A budget's execution",
               permission="billing:read", query=BudgetReportQuerySchema,
               response=BudgetReportSchema, tags=BUDGETS, errors=(404,))
def get_budget_report(principal: Principal, budget_id: int, query: dict):
    """Approved, committed, spent, remaining and the execution rate of each line (``by=line``),
    or committed and spent by ``supplier``, ``sector``, ``dataset`` or ``month``. Committed is
    commitments less releases and expenditures; spent is expenditures less refunds."""
    session = db_session()
    return reports.budget_report(session, get_budget(session, principal, budget_id),
                                 query["by"]).to_dict()


@api.operation("/budgets/<int:budget_id>/report/records", "GET",
               summary="The budget records behind a figure", permission="billing:read",
               query=BudgetRecordsQuerySchema, response=BudgetRecordPageSchema, tags=BUDGETS,
               errors=(404,))
def get_budget_records(principal: Principal, budget_id: int, query: dict):
    """The records matching every filter given, newest first, a page at a time; ``total``,
    ``committed`` and ``spent`` count all of them, so they equal the report's figure."""
    session = db_session()
    budget = get_budget(session, principal, budget_id)
    filters = {name: query[name] for name in reports.DRILL_FILTERS if query[name] is not None}
    sums = reports.record_sums(session, budget, filters)
    page = reports.matching_records(session, budget, filters).page(page_request(query))
    return {**sums.to_dict(), "items": [sums.record(record) for record in page.items],
            "next_cursor": page.next_cursor}


def _export(principal: Principal, budget_id: int, extension: str) -> Response:
    budget = get_budget(db_session(), principal, budget_id)
    report = reports.budget_report(db_session(), budget, "line")
    body, mimetype = ((reports.report_xlsx(report), reports.XLSX_MEDIA_TYPE)
                      if extension == "xlsx" else (reports.report_csv(report),
                                                   reports.CSV_MEDIA_TYPE))
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="budget-{budget.id}-fy{budget.fiscal_year}.{extension}"')
    return response


@api.operation("/budgets/<int:budget_id>/report.xlsx", "GET",
               summary="A budget's execution by line as XLSX", permission="billing:read",
               tags=BUDGETS, errors=(404,), raw_response=reports.XLSX_MEDIA_TYPE)
def get_budget_report_xlsx(principal: Principal, budget_id: int):
    """The organization, fiscal year and period on top, one row per line, then the totals."""
    return _export(principal, budget_id, "xlsx")


@api.operation("/budgets/<int:budget_id>/report.csv", "GET",
               summary="A budget's execution by line as CSV", permission="billing:read",
               tags=BUDGETS, errors=(404,), raw_response="text/csv")
def get_budget_report_csv(principal: Principal, budget_id: int):
    """The same as the XLSX, in UTF-8 with a byte-order mark."""
    return _export(principal, budget_id, "csv")
