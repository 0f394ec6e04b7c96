"""Budget-execution reports (预算执行报告): what each line of a budget approved, committed and
spent, by line, supplier, sector, dataset and month, each figure with the records behind it,
and the line report as CSV and XLSX for finance staff.

How the figures come from the records (``BudgetRecord.kind``; ``amount_minor`` is always
positive and the kind says which way it moves), as ``billing.budgets.lines`` writes them::

    commitment   committed + amount   an order placed on the line (checkout)
    release      committed − amount   that commitment ends: the order was paid or cancelled
    expenditure  spent     + amount   paid (an order, a renewal, a day of API usage, its tax)
    refund       spent     − amount   money returned after payment

so ``committed = commitment − release`` and ``spent = expenditure − refund``; each kind moves
one figure only, and paying an order writes a release and an expenditure.

One exception, by design of the budget service: a postpaid API call commits its amount on the
budget's API line with no record of its own (there may be millions a day); the daily usage
posting then writes a ``release`` (source ``usage``) and an ``expenditure`` for each dataset's
day. Such a release gives back commitments that were never recorded, so it does not count
against recorded ones. Hence:

- by line, ``approved``, ``committed`` and ``spent`` are the line's own columns (what the
  purchase checks use), and ``unrecorded_committed`` is the part of ``committed`` no record
  shows — API calls not yet posted; every other row's figures sum the records;
- a line row is ``reconciled`` when its records give exactly its spent and its committed less
  that unrecorded part (always, unless something wrote the columns without records).

``approved`` exists for lines only; ``remaining = approved − committed − spent``; the
``execution rate = spent / approved`` in percent, an exact ``Decimal`` rounded half-up to 0.01
(None when nothing is approved).

Sums run in SQL (one GROUP BY per report), on SQLite and PostgreSQL alike; money stays integer
minor units in the budget's currency. This module reads the tables only: it writes nothing.
The exports write names inert and amounts exact (``billing.spreadsheets``).
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from billing.models.budgets import Budget, BudgetLine, BudgetRecord
from billing.spreadsheets import append_row, csv_file
from market.accounts.models import Organization
from market.catalog.models import Dataset
from market.catalog.taxonomy import SECTORS
from market.core.keyset import Keyset, desc
from pricing.money import Money, minor_units

GROUPINGS = ("line", "supplier", "sector", "dataset", "month")
# A drill-down filter's value for the records that have no supplier, sector or dataset.
NONE = "none"
RECORDS_PER_PAGE = 50

# The source of the releases the daily usage posting writes (see the module notes).
USAGE_SOURCE = "usage"

CSV_MEDIA_TYPE = "text/csv"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

_CENT = Decimal("0.01")


def execution_rate(spent_minor: int, approved_minor: int | None) -> Decimal | None:
    """``spent / approved`` in percent, exact, rounded half-up to 0.01; None if none approved."""
    if not approved_minor:
        return None
    return (Decimal(spent_minor * 100) / Decimal(approved_minor)).quantize(
        _CENT, rounding=ROUND_HALF_UP)


def _committed_sum() -> ColumnElement:
    amount = BudgetRecord.amount_minor
    return func.coalesce(func.sum(case(
        (BudgetRecord.kind == "commitment", amount),
        ((BudgetRecord.kind == "release") & (BudgetRecord.source != USAGE_SOURCE), -amount),
        else_=0)), 0)


def _spent_sum() -> ColumnElement:
    amount = BudgetRecord.amount_minor
    return func.coalesce(func.sum(case(
        (BudgetRecord.kind == "expenditure", amount),
        (BudgetRecord.kind == "refund", -amount),
        else_=0)), 0)


@dataclass(frozen=True)
class ReportRow:
    """One figure of a report: a line, a supplier, a sector, a dataset or a month."""

    key: str  # the drill-down filter's value: a line or organization or dataset id, a sector
    # code, a month, or NONE
    label: str
    label_zh: str
    committed_minor: int
    spent_minor: int
    records: int
    approved_minor: int | None = None  # lines (and totals) only
    code: str | None = None
    category: str | None = None
    project: str | None = None
    reconciled: bool | None = None  # lines only: the records sum to the line's columns
    unrecorded_committed_minor: int = 0  # lines only: committed by API calls, not yet posted

    @property
    def remaining_minor(self) -> int | None:
        if self.approved_minor is None:
            return None
        return self.approved_minor - self.committed_minor - self.spent_minor

    @property
    def execution_rate(self) -> Decimal | None:
        return execution_rate(self.spent_minor, self.approved_minor)

    def label_in(self, zh: bool) -> str:
        return self.label_zh if zh else self.label


@dataclass(frozen=True)
class BudgetReport:
    budget_id: int
    budget_name: str
    organization_name: str
    fiscal_year: int
    currency: str
    by: str
    rows: list[ReportRow]
    totals: ReportRow
    generated_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"budget_id": self.budget_id, "budget_name": self.budget_name,
                "organization": self.organization_name, "fiscal_year": self.fiscal_year,
                "currency": self.currency, "by": self.by,
                "generated_at": self.generated_at.isoformat(),
                "rows": [_row_dict(row, self.currency) for row in self.rows],
                "totals": _row_dict(self.totals, self.currency)}


def _money(minor: int | None, currency: str) -> str | None:
    return None if minor is None else str(Money.from_minor(minor, currency).amount)


def _row_dict(row: ReportRow, currency: str) -> dict[str, Any]:
    data: dict[str, Any] = {"key": row.key, "label": row.label, "label_zh": row.label_zh,
                            "committed": _money(row.committed_minor, currency),
                            "spent": _money(row.spent_minor, currency), "records": row.records}
    if row.approved_minor is not None:
        rate = row.execution_rate
        data.update(approved=_money(row.approved_minor, currency),
                    remaining=_money(row.remaining_minor, currency),
                    execution_rate=None if rate is None else str(rate))
    if row.code is not None or row.key == "total":
        data["unrecorded_committed"] = _money(row.unrecorded_committed_minor, currency)
    if row.code is not None:
        data.update(code=row.code, category=row.category, project=row.project,
                    reconciled=row.reconciled)
    return data


def budget_report(session: Session, budget: Budget, by: str = "line", *,
                  now: dt.datetime | None = None) -> BudgetReport:
    """The budget's execution grouped ``by`` one of ``GROUPINGS``, with its totals.

    The totals are the same whatever the grouping: every record of the budget counts once.
    """
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}")
    rows = _LOADERS[by](session, budget)
    # Other groupings need the lines only for the totals: approved, and what the API line holds
    # unrecorded, so only that line's records are summed again (not the whole budget's).
    lines = rows if by == "line" else _line_rows(session, budget, api_only=True)
    # By line the committed figures include API calls not yet posted (no record shows them);
    # by any other dimension only what records show, so the totals say how much that is.
    unrecorded = sum(line.unrecorded_committed_minor for line in lines)
    totals = ReportRow(key="total", label="Total", label_zh="合计",
                       committed_minor=sum(row.committed_minor for row in rows),
                       spent_minor=sum(row.spent_minor for row in rows),
                       records=sum(row.records for row in rows),
                       approved_minor=int(session.scalar(
                           select(func.coalesce(func.sum(BudgetLine.approved_minor), 0))
                           .where(BudgetLine.budget_id == budget.id))),
                       unrecorded_committed_minor=unrecorded)
    organization = session.get(Organization, budget.organization_id)
    return BudgetReport(budget_id=budget.id, budget_name=budget.name,
                        organization_name=organization.name if organization else "",
                        fiscal_year=budget.fiscal_year, currency=budget.currency, by=by,
                        rows=rows, totals=totals,
                        generated_at=now or dt.datetime.now(dt.timezone.utc))


def _of_budget(budget: Budget) -> ColumnElement[bool]:
    # Through the budget's lines (few), so the records' line_id index serves every report.
    return BudgetRecord.line_id.in_(select(BudgetLine.id).where(BudgetLine.budget_id == budget.id))


def _sums(column) -> Any:
    return (select(column.label("key"), _committed_sum().label("committed"),
                   _spent_sum().label("spent"), func.count(BudgetRecord.id).label("records"))
            .group_by(column))


def _line_rows(session: Session, budget: Budget, *, api_only: bool = False) -> list[ReportRow]:
    lines = select(BudgetLine.id).where(BudgetLine.budget_id == budget.id)
    if api_only:
        lines = lines.where(BudgetLine.default_for_api.is_(True))
    sums = _sums(BudgetRecord.line_id).where(BudgetRecord.line_id.in_(lines)).subquery()
    query = (select(BudgetLine, sums.c.committed, sums.c.spent, sums.c.records)
             .outerjoin(sums, sums.c.key == BudgetLine.id)
             .where(BudgetLine.id.in_(lines)).order_by(BudgetLine.code))
    rows = []
    for line, committed, spent, records in session.execute(query):
        committed, spent = int(committed or 0), int(spent or 0)
        unrecorded = line.committed_minor - committed
        rows.append(ReportRow(
            key=str(line.id), label=line.name, label_zh=line.name,
            committed_minor=line.committed_minor, spent_minor=line.spent_minor,
            records=int(records or 0), approved_minor=line.approved_minor, code=line.code,
            category=line.category, project=line.project,
            reconciled=spent == line.spent_minor and (unrecorded == 0 or (
                line.default_for_api and unrecorded > 0)),
            unrecorded_committed_minor=max(unrecorded, 0) if line.default_for_api else 0))
    return rows


def _grouped(session: Session, budget: Budget, column) -> list:
    query = _sums(column).where(_of_budget(budget))
    return [(key, int(committed), int(spent), int(records))
            for key, committed, spent, records in session.execute(query)]


def _ordered(rows: list[ReportRow]) -> list[ReportRow]:
    # Largest spending first, then the label: the order a reader scans for.
    return sorted(rows, key=lambda row: (-row.spent_minor, -row.committed_minor, row.label))


def _supplier_rows(session: Session, budget: Budget) -> list[ReportRow]:
    groups = _grouped(session, budget, BudgetRecord.supplier_id)
    ids = [key for key, *_ in groups if key is not None]
    names = dict(session.execute(select(Organization.id, Organization.name)
                                 .where(Organization.id.in_(ids))).all()) if ids else {}
    return _ordered([_dimension_row(key, names.get(key, f"#{key}"), names.get(key, f"#{key}"),
                                    *sums) for key, *sums in groups])


def _sector_rows(session: Session, budget: Budget) -> list[ReportRow]:
    rows = []
    for key, *sums in _grouped(session, budget, BudgetRecord.sector):
        term = SECTORS.get(key) if key is not None else None
        rows.append(_dimension_row(key, term.en if term else key, term.zh if term else key,
                                   *sums))
    return _ordered(rows)


def _dataset_rows(session: Session, budget: Budget) -> list[ReportRow]:
    groups = _grouped(session, budget, BudgetRecord.dataset_id)
    ids = [key for key, *_ in groups if key is not None]
    titles = {id_: (en, zh) for id_, en, zh in session.execute(
        select(Dataset.id, Dataset.title_en, Dataset.title_zh).where(Dataset.id.in_(ids)))
        } if ids else {}
    return _ordered([_dimension_row(key, *titles.get(key, (f"#{key}", f"#{key}")), *sums)
                     for key, *sums in groups])


def _month_rows(session: Session, budget: Budget) -> list[ReportRow]:
    # Calendar order, every month of the fiscal year present (zero when nothing happened),
    # plus any month outside it that has records (a late refund, say).
    found = {key: sums for key, *sums in _grouped(session, budget, BudgetRecord.month)}
    months = {f"{budget.fiscal_year:04d}-{m:02d}" for m in range(1, 13)} | set(found)
    return [_dimension_row(month, month, month, *found.get(month, (0, 0, 0)))
            for month in sorted(months)]


def _dimension_row(key, label: str | None, label_zh: str | None, committed: int, spent: int,
                   records: int) -> ReportRow:
    if key is None:
        return ReportRow(key=NONE, label="(none)", label_zh="（无）", committed_minor=committed,
                         spent_minor=spent, records=records)
    return ReportRow(key=str(key), label=label or str(key), label_zh=label_zh or str(key),
                     committed_minor=committed, spent_minor=spent, records=records)


_LOADERS = {"line": _line_rows, "supplier": _supplier_rows, "sector": _sector_rows,
            "dataset": _dataset_rows, "month": _month_rows}


# Drill-down -------------------------------------------------------------------------------------

DRILL_FILTERS = ("line", "supplier", "sector", "dataset", "month")


@dataclass(frozen=True)
class RecordSums:
    """What the records behind a figure add up to: all of them, whichever page is shown."""

    filters: dict[str, str]
    total: int
    committed_minor: int
    spent_minor: int
    currency: str
    lines: dict[int, BudgetLine] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"filters": self.filters, "total": self.total,
                "committed": _money(self.committed_minor, self.currency),
                "spent": _money(self.spent_minor, self.currency)}

    def record(self, r: BudgetRecord) -> dict[str, Any]:
        line = self.lines.get(r.line_id)
        return {"id": r.id, "line_id": r.line_id, "line_code": line.code if line else None,
                "kind": r.kind, "amount": _money(r.amount_minor, r.currency),
                "currency": r.currency, "order_id": r.order_id, "dataset_id": r.dataset_id,
                "supplier_id": r.supplier_id, "sector": r.sector, "month": r.month,
                "source": r.source, "reference": r.reference, "note": r.note,
                "occurred_at": r.occurred_at.isoformat()}


@dataclass(frozen=True)
class RecordPage(RecordSums):
    """The records behind a figure: one numbered page of them, newest first, and the sums of
    all (the storefront's drill-down; the API pages by cursor, ``matching_records``)."""

    records: list[BudgetRecord] = field(default_factory=list)
    page: int = 1
    per_page: int = RECORDS_PER_PAGE

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "page": self.page, "per_page": self.per_page,
                "pages": self.pages, "records": [self.record(r) for r in self.records]}


def _filter_clauses(filters: dict[str, str]) -> list[ColumnElement[bool]]:
    """Clauses for drill-down filters; raises ``ValueError`` naming a malformed one."""
    columns = {"line": BudgetRecord.line_id, "supplier": BudgetRecord.supplier_id,
               "sector": BudgetRecord.sector, "dataset": BudgetRecord.dataset_id,
               "month": BudgetRecord.month}
    clauses = []
    for name, value in filters.items():
        if name not in columns:
            raise ValueError(name)
        column = columns[name]
        if value == NONE and name in ("supplier", "sector", "dataset"):
            clauses.append(column.is_(None))
        elif name in ("line", "supplier", "dataset"):
            if not value.isdigit():
                raise ValueError(name)
            clauses.append(column == int(value))
        else:
            clauses.append(column == value)
    return clauses


NEWEST_FIRST = (desc(BudgetRecord.occurred_at), desc(BudgetRecord.id))


def _matching(budget: Budget, filters: dict[str, str]) -> list[ColumnElement[bool]]:
    return [_of_budget(budget), *_filter_clauses(_given(filters))]


def _given(filters: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in filters.items() if value not in (None, "")}


def record_sums(session: Session, budget: Budget, filters: dict[str, str]) -> RecordSums:
    """How many of the budget's records match every filter (``DRILL_FILTERS``; ``none``
    matches an empty supplier, sector or dataset) and what they sum to: the figure the
    drill-down came from."""
    total, committed, spent = session.execute(
        select(func.count(BudgetRecord.id), _committed_sum(), _spent_sum())
        .where(*_matching(budget, filters))).one()
    lines = {line.id: line for line in session.scalars(
        select(BudgetLine).where(BudgetLine.budget_id == budget.id))}
    return RecordSums(filters=_given(filters), total=int(total), committed_minor=int(committed),
                      spent_minor=int(spent), currency=budget.currency, lines=lines)


def matching_records(session: Session, budget: Budget, filters: dict[str, str]
                     ) -> Keyset[BudgetRecord]:
    """The budget's records matching every filter, newest first."""
    return Keyset(session, select(BudgetRecord).where(*_matching(budget, filters)), NEWEST_FIRST)


def budget_records(session: Session, budget: Budget, filters: dict[str, str], *, page: int = 1,
                   per_page: int = RECORDS_PER_PAGE) -> RecordPage:
    """The records matching every filter, newest first, one numbered page, with the sums of
    all of them (``record_sums``)."""
    sums = record_sums(session, budget, filters)
    records = list(session.scalars(
        select(BudgetRecord).where(*_matching(budget, filters))
        .order_by(BudgetRecord.occurred_at.desc(), BudgetRecord.id.desc())
        .limit(per_page).offset((page - 1) * per_page)))
    return RecordPage(**vars(sums), records=records, page=page, per_page=per_page)


# Exports ----------------------------------------------------------------------------------------

HEADINGS = (
    ("编码", "Code"), ("名称", "Name"), ("类别", "Category"), ("项目", "Project"),
    ("批复金额", "Approved"), ("已承诺", "Committed"), ("已支出", "Spent"),
    ("剩余", "Remaining"), ("执行率 (%)", "Execution rate (%)"),
)
CATEGORY_LABELS = {"data_purchase": "数据采购 Data purchase", "compute": "算力 Compute",
                   "model_services": "模型服务 Model services", "other": "其他 Other"}


def _bilingual(pair: tuple[str, str]) -> str:
    return f"{pair[0]} / {pair[1]}"


def _amount(minor: int, currency: str) -> Decimal:
    return Money.from_minor(minor, currency).amount


def _header_rows(report: BudgetReport) -> list[list[Any]]:
    return [
        [_bilingual(("预算执行报告", "Budget execution report")), report.budget_name],
        [_bilingual(("单位", "Organization")), report.organization_name],
        [_bilingual(("预算年度", "Fiscal year")), report.fiscal_year],
        [_bilingual(("期间", "Period")),
         f"{report.fiscal_year}-01-01 – {report.fiscal_year}-12-31"],
        [_bilingual(("币种", "Currency")), report.currency],
        [_bilingual(("生成时间 (UTC)", "Generated (UTC)")),
         report.generated_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")],
    ]


def _table(report: BudgetReport) -> list[list[Any]]:
    """The line rows and the totals row, numbers as exact Decimals."""
    def cells(row: ReportRow, first: list[Any]) -> list[Any]:
        return first + [_amount(row.approved_minor or 0, report.currency),
                        _amount(row.committed_minor, report.currency),
                        _amount(row.spent_minor, report.currency),
                        _amount(row.remaining_minor or 0, report.currency), row.execution_rate]
    body = [cells(row, [row.code, row.label, CATEGORY_LABELS.get(row.category, row.category),
                        row.project or ""]) for row in report.rows if report.by == "line"]
    body.append(cells(report.totals, [_bilingual(("合计", "Total")), "", "", ""]))
    return body


def report_csv(report: BudgetReport) -> bytes:
    """The line report as CSV (UTF-8 with a BOM, so spreadsheet programs read the Chinese)."""
    return csv_file([*_header_rows(report), [], [_bilingual(h) for h in HEADINGS],
                     *_table(report)])


def report_xlsx(report: BudgetReport) -> bytes:
    """The line report as one XLSX sheet: real numbers in 2-decimal cells, a bold totals row."""
    places = minor_units(report.currency)
    money_format = "#,##0" + ("." + "0" * places if places else "")
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = f"FY{report.fiscal_year}"
    for values in _header_rows(report):
        append_row(sheet, values)
    sheet["A1"].font = Font(bold=True)
    sheet.append([])
    heading_row = append_row(sheet, [_bilingual(h) for h in HEADINGS])
    for cell in sheet[heading_row]:
        cell.font = Font(bold=True)
    for values in _table(report):
        row = append_row(sheet, values)
        for column in range(5, 9):
            sheet.cell(row=row, column=column).number_format = money_format
        sheet.cell(row=row, column=9).number_format = "0.00"
    for cell in sheet[sheet.max_row]:
        cell.font = Font(bold=True)
    for letter, width in zip("ABCDEFGHI", (14, 30, 22, 24, 16, 16, 16, 16, 12)):
        sheet.column_dimensions[letter].width = width
    sheet.freeze_panes = sheet.cell(row=heading_row + 1, column=1)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
